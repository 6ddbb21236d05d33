"""Every hookspec is documented with its exact signature and has a ``test_hook_<name>`` test.

The hook tests register a plugin object inside the test and check that what it registered
shows up where the harness looks for it (the registry, ``crsbench list``, a real run).
"""
from __future__ import annotations

import ast
import inspect
import json
import logging
import re
from pathlib import Path

import click
import numpy as np
import pytest

from crsbench import MeanMetric, Model, Reward, RunContext, Task, TaskData, hookimpl, hookspecs
from crsbench.plugins import PluginRegistry

REPO_ROOT = Path(__file__).resolve().parent.parent
PLUGIN_API = REPO_ROOT / "docs" / "plugin-api.md"


def hookspec_functions() -> dict:
    marker = f"{hookspecs.hookspec.project_name}_spec"
    return {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, marker)}


def signature_text(name: str, fn) -> str:
    return f"{name}({', '.join(inspect.signature(fn).parameters)})"


def call_main(args, capsys) -> tuple[int, str, str]:
    from crsbench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


# -- the contract ------------------------------------------------------------------------
def test_hookspecs_are_found():
    assert {"register_models", "register_tasks", "register_metrics", "register_rewards",
            "register_commands"} <= set(hookspec_functions())


@pytest.mark.parametrize("name", sorted(hookspec_functions()))
def test_hook_is_documented_with_its_signature(name):
    signature = signature_text(name, hookspec_functions()[name])
    headings = re.findall(r"^#{2,4} .*$", PLUGIN_API.read_text(encoding="utf-8"), flags=re.M)
    assert any(f"`{signature}`" in h for h in headings), \
        f"docs/plugin-api.md needs a heading with `{signature}`"


def test_documented_hooks_exist():
    """No stale hook headings: every documented `register_*(...)` heading is a real hookspec."""
    specs = {signature_text(n, fn) for n, fn in hookspec_functions().items()}
    text = PLUGIN_API.read_text(encoding="utf-8")
    documented = set(re.findall(r"^#{2,4} `(register_\w+\([^)]*\))`", text, flags=re.M))
    assert documented == specs


@pytest.mark.parametrize("name", sorted(hookspec_functions()))
def test_hook_has_a_test(name):
    """Each hook has its own test in this file (a module-level ``test_hook_<name>``)."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    test_names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert f"test_hook_{name}" in test_names, f"tests/test_hooks.py needs a test_hook_{name}"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


def test_plugin_api_python_examples_are_valid_python():
    blocks = python_blocks(PLUGIN_API.read_text(encoding="utf-8"))
    assert len(blocks) >= len(hookspec_functions())
    for block in blocks:
        ast.parse(block)


def test_plugin_api_self_contained_examples_register(tmp_path):
    """The hook examples that need no imaginary package really register what they show."""
    import types

    registry = PluginRegistry()
    examples = [b for b in python_blocks(PLUGIN_API.read_text(encoding="utf-8"))
                if "@hookimpl" in b and "my_package" not in b]
    assert len(examples) >= 3
    for number, block in enumerate(examples):
        module = types.ModuleType(f"plugin_api_example_{number}")
        exec(compile(block, module.__name__, "exec"), module.__dict__)
        registry.register_plugin(module, module.__name__)
    collected = registry.collected()
    assert not [info.error for info in registry.plugins.values() if info.error]
    assert "most-recent-item" in collected["models"]
    assert "top5_hit" in collected["metrics"] and "politeness" in collected["rewards"]

    model_cls = collected["models"]["most-recent-item"].obj
    model = model_cls({}, RunContext(run_dir=tmp_path))
    assert model.recommend([tiny_sample("d", 2, [3, 1, 3], [2])]) == [[3, 1]]
    reward = collected["rewards"]["politeness"].obj()
    assert reward.score([{}, {}], ["Thanks!", "no"]) == [1.0, 0.0]


def test_plugin_api_documents_the_data_formats():
    """Model/RunContext/Task members, sample keys, prediction-record and result fields are all named."""
    import dataclasses

    from crsbench.predictions import _base_record
    from crsbench.results import build_result
    from crsbench.runner import evaluation_summary

    text = PLUGIN_API.read_text(encoding="utf-8")

    def missing(names):
        return sorted(n for n in names if not any(form in text for form in (f"`{n}`", f"`{n}(", f'"{n}"')))

    model_members = {"name", "version", "description", "generates", "profiles", "default_profile", "fit",
                     "recommend", "generate", "result_extra"}
    assert not missing(model_members)
    assert not missing({f.name for f in dataclasses.fields(RunContext)} | {"checkpoint_dir"})
    assert not missing({"protocols", "load", "data_info", "find_items"})
    assert not missing({f.name for f in dataclasses.fields(TaskData)})
    assert not missing({"prepare", "score", "compute", "values", "kind", "higher_is_better"})

    sample = tiny_sample("d", 1, [1], [2])
    assert not missing(sample)
    record = _base_record(sample) | {"context": []}  # the runner adds the context texts
    assert not missing(record)
    assert not missing({"item", "feedback", "rank"})

    result = build_result(task={}, model={}, seeds={}, evaluation={}, metrics={}, timings={}, device="cpu")
    assert not missing(result)
    assert not missing(result["environment"])
    assert not missing(evaluation_summary([], ("standard",), 10, None, {}))
    assert not missing({"value", "ci_low", "ci_high", "n"})
    assert not missing({"CRSBENCH_PLUGINS", "crsbench"})
    for heavy in ("torch", "transformers", "datasets"):
        assert f"`{heavy}`" in text


# -- a tiny task, model, metric and reward --------------------------------------------------
def tiny_sample(dialog, turn, context_items, targets, feedback=None):
    return {"sample_id": f"{dialog}-{turn}", "dialog_id": dialog, "turn": turn,
            "context": ["hi"] * len(context_items), "context_roles": ["seeker"] * len(context_items),
            "context_items": context_items, "context_entities": [], "targets": targets,
            "target_feedback": feedback or ["liked"] * len(targets), "response": "try <movie>",
            "response_template": "try <movie>", "response_entities": []}


class TinyTask(Task):
    name = "tiny-task"
    version = "1"
    description = "Four dialogues over five items (test plugin)."

    def load(self, limit=None):
        test = [tiny_sample(f"t{i}", 1, [i], [(i + 1) % 5]) for i in range(4)]
        train = [tiny_sample(f"r{i}", 1, [i], [(i + 1) % 5]) for i in range(5)]
        return TaskData(splits={"train": train, "test": test[:limit] if limit else test},
                        items=[0, 1, 2, 3, 4], item_names={i: f"item {i}" for i in range(5)})

    def data_info(self):
        return {"variant": "inline", "sha256": None, "files": {}}


class NextItemModel(Model):
    name = "tiny-next-item"
    version = "1"
    description = "Recommends item (last context item + 1) (test plugin)."
    profiles = {"default": {"step": 1}}

    def recommend(self, batch):
        return [[(s["context_items"][-1] + self.config["step"]) % 5] for s in batch]  # partial ranking


class FirstPlaceMetric(MeanMetric):
    name = "tiny_first_place"
    kind = "recommendation"
    description = "Share of targets ranked first (test plugin)."

    def values(self, units):
        rank = np.asarray(units["rank"], dtype=float)
        return (rank == 1).astype(float), np.ones(len(rank), dtype=bool)


class ResponseLengthMetric(MeanMetric):
    name = "tiny_response_length"
    kind = "generation"

    def values(self, units):
        return np.array([len(h) for h in units["hyp"]], dtype=float), np.ones(len(units), dtype=bool)


class LengthReward(Reward):
    name = "tiny-length"
    description = "Response length in characters, capped (test plugin)."

    def score(self, samples, responses):
        cap = self.options.get("cap", 10)
        return [float(min(len(r), cap)) for r in responses]


@pytest.fixture
def crsbench_logger_restored():
    """A run adds handlers to the 'crsbench' logger; drop them so later tests stay quiet."""
    logger = logging.getLogger("crsbench")
    before, level = list(logger.handlers), logger.level
    yield
    for handler in logger.handlers[:]:
        if handler not in before:
            logger.removeHandler(handler)
    logger.setLevel(level)


# -- one test per hook -------------------------------------------------------------------------
def test_hook_register_models(isolated_registry, capsys):
    class Plugin:
        @hookimpl
        def register_models(self, register):
            register(NextItemModel)

    standalone = PluginRegistry()
    standalone.register_plugin(Plugin(), "tiny")
    entry = standalone.models()["tiny-next-item"]
    assert entry.obj is NextItemModel and entry.plugin == "tiny"
    assert standalone.plugins["tiny"].hooks == ["register_models"]
    standalone.unregister_plugin("tiny")
    assert "tiny-next-item" not in standalone.models() and "tiny" not in standalone.plugins

    isolated_registry.register_plugin(Plugin(), "tiny")
    code, out, _ = call_main(["list", "models"], capsys)
    assert code == 0
    assert re.search(r"^  tiny-next-item +Recommends item .*\[tiny\]$", out, flags=re.M), out


def test_hook_register_tasks(isolated_registry, capsys, tmp_path, crsbench_logger_restored):
    """A registered task is runnable end to end, with models and metrics from other plugins."""
    class TaskPlugin:
        @hookimpl
        def register_tasks(self, register):
            register(TinyTask)

    class ModelPlugin:
        @hookimpl
        def register_models(self, register):
            register(NextItemModel)

        @hookimpl
        def register_metrics(self, register):
            register(FirstPlaceMetric())
            register(ResponseLengthMetric())

    isolated_registry.register_plugin(TaskPlugin(), "tiny_tasks")
    isolated_registry.register_plugin(ModelPlugin(), "tiny_models")
    assert isolated_registry.tasks()["tiny-task"].obj is TinyTask

    code, out, _ = call_main(["list", "tasks"], capsys)
    assert code == 0 and "tiny-task" in out and "[tiny_tasks]" in out

    code, out, err = call_main(["run", "tiny-next-item", "--task", "tiny-task", "--device", "cpu",
                                "--output-dir", str(tmp_path), "--n-bootstrap", "20", "--no-progress"], capsys)
    assert code == 0, err
    result = json.loads(next(tmp_path.glob("*/result.json")).read_text())
    assert result["task"]["name"] == "tiny-task" and result["model"]["plugin"] == "tiny_models"
    assert result["evaluation"]["n_samples"] == 4
    # Targets 0..3 are "last context item + 1": the model ranks each of them first.
    assert result["metrics"]["standard/tiny_first_place"]["value"] == 1.0
    # Non-generating model: the harness reports no generation metric, and says so.
    assert not [k for k in result["metrics"] if k.startswith("generation/")]
    assert any("does not generate" in note for note in result["notes"])

    isolated_registry.unregister_plugin("tiny_tasks")
    assert "tiny-task" not in isolated_registry.tasks()
    code, out, err = call_main(["list", "tasks"], capsys)
    assert code == 0 and "tiny-task" not in out
    code, out, err = call_main(["run", "tiny-next-item", "--task", "tiny-task", "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and "unknown task 'tiny-task'" in err


def test_hook_register_metrics(isolated_registry, capsys):
    from crsbench.evaluation import score_records

    class Plugin:
        @hookimpl
        def register_metrics(self, register):
            register(FirstPlaceMetric())
            register(ResponseLengthMetric())

    isolated_registry.register_plugin(Plugin(), "tiny_metrics")
    metrics = isolated_registry.metrics_objects()
    assert set(metrics) == {"tiny_first_place", "tiny_response_length"}
    assert isolated_registry.metrics()["tiny_first_place"].plugin == "tiny_metrics"

    def record(dialog, rank, response=None):
        return {"sample_id": dialog, "dialog_id": dialog, "context_items": [], "context_item_ranks": [],
                "targets": [{"item": 1, "feedback": "liked", "rank": rank}], "response": response,
                "reference": "ref", "hyp_items": 0}

    records = [record("a", 1), record("b", 3), record("c", None), record("d", 1)]
    scored = score_records(records, metrics, ["standard"], n_boot=30)
    assert scored["standard/tiny_first_place"]["value"] == 0.5
    assert scored["standard/tiny_first_place"]["n"] == 4
    assert "generation/tiny_response_length" not in scored  # no responses, no generation metrics

    records[0]["response"], records[1]["response"] = "abcd", "ab"
    scored = score_records(records, metrics, ["standard"], n_boot=30)
    assert scored["generation/tiny_response_length"]["value"] == 3.0
    assert scored["generation/tiny_response_length"]["n"] == 2

    code, out, _ = call_main(["list", "metrics"], capsys)
    assert code == 0 and "tiny_first_place" in out and "[tiny_metrics]" in out

    isolated_registry.unregister_plugin("tiny_metrics")
    assert isolated_registry.metrics_objects() == {}
    assert score_records(records, isolated_registry.metrics_objects(), ["standard"], n_boot=30) == {}
    code, out, _ = call_main(["list", "metrics"], capsys)
    assert code == 0 and "tiny_first_place" not in out


def test_hook_register_rewards(isolated_registry, capsys):
    from crsbench.plugins import lookup

    class Plugin:
        @hookimpl
        def register_rewards(self, register):
            register(LengthReward)

    isolated_registry.register_plugin(Plugin(), "tiny_rewards")
    entry = lookup("rewards", "tiny-length")  # how a training model finds a reward by name
    assert entry.obj is LengthReward and entry.plugin == "tiny_rewards"
    reward = entry.obj(cap=3)
    assert reward.score([{}, {}], ["ab", "abcdef"]) == [2.0, 3.0]

    code, out, _ = call_main(["list", "rewards"], capsys)
    assert code == 0 and re.search(r"^  tiny-length +Response length .*\[tiny_rewards\]$", out, flags=re.M)

    isolated_registry.unregister_plugin("tiny_rewards")
    code, out, _ = call_main(["list", "rewards"], capsys)
    assert "tiny-length" not in out and "(none)" in out


def test_hook_register_commands(isolated_registry, capsys):
    @click.command(name="tiny-hello")
    @click.option("--name", default="world")
    def hello(name):
        """Say hello (test plugin)."""
        click.echo(f"hello {name}")

    class Plugin:
        @hookimpl
        def register_commands(self, cli):
            cli.add_command(hello)

    isolated_registry.register_plugin(Plugin(), "tiny_commands")
    assert isolated_registry.plugins["tiny_commands"].hooks == ["register_commands"]

    code, out, _ = call_main(["tiny-hello", "--name", "crs"], capsys)
    assert (code, out) == (0, "hello crs\n")
    code, out, _ = call_main(["--help"], capsys)
    assert code == 0 and re.search(r"^  tiny-hello +Say hello", out, flags=re.M)
    code, out, _ = call_main(["plugins"], capsys)
    assert "tiny_commands" in out and "hooks: register_commands" in out

    # Commands are attached when the CLI starts; after unregistering, a fresh CLI gets none.
    isolated_registry.unregister_plugin("tiny_commands")
    fresh = click.Group("fresh")
    isolated_registry.add_commands(fresh)
    assert fresh.commands == {}
    assert "tiny_commands" not in isolated_registry.plugins


def test_hook_register_judges(isolated_registry, capsys):
    class TinyJudge:  # only ``name`` is required to register (the full interface: crsbench/judge.py)
        name = "tiny-judge"
        description = "Gives every response 1.0 (test plugin)."

    class Plugin:
        @hookimpl
        def register_judges(self, register):
            register(TinyJudge)

    isolated_registry.register_plugin(Plugin(), "tiny_judges")
    assert isolated_registry.plugins["tiny_judges"].hooks == ["register_judges"]
    entry = isolated_registry.judges()["tiny-judge"]
    assert entry.obj is TinyJudge and entry.plugin == "tiny_judges"

    code, out, _ = call_main(["list", "judges"], capsys)
    assert code == 0 and re.search(r"^  tiny-judge +Gives every response .*\[tiny_judges\]$", out, flags=re.M), out
    code, out, _ = call_main(["plugins"], capsys)
    assert "hooks: register_judges" in out and "error" not in out

    isolated_registry.unregister_plugin("tiny_judges")
    assert isolated_registry.judges() == {}
    code, out, _ = call_main(["list", "judges"], capsys)
    assert code == 0 and out == "judges:\n  (none)\n"


def test_a_judge_without_a_name_is_refused(isolated_registry, capsys):
    class Plugin:
        @hookimpl
        def register_judges(self, register):
            register(type("Nameless", (), {}))

    isolated_registry.register_plugin(Plugin(), "nameless_judges")
    assert isolated_registry.judges() == {}
    assert "has no name" in isolated_registry.plugins["nameless_judges"].error
    code, out, _ = call_main(["list", "judges"], capsys)
    assert code == 0 and "(none)" in out


def test_a_failing_register_commands_does_not_break_the_cli(isolated_registry, capsys):
    class Plugin:
        @hookimpl
        def register_commands(self, cli):
            raise RuntimeError("no commands today")

    isolated_registry.register_plugin(Plugin(), "bad_commands")
    code, out, _ = call_main(["plugins"], capsys)
    assert code == 0
    assert "error: register_commands: RuntimeError: no commands today" in out


def test_hook_register_rubrics(isolated_registry, capsys, tmp_path):
    from crsbench.judge import Judge, JudgeInput, JudgeScore
    from crsbench.rubric import Criterion, Rubric

    tiny = Rubric(name="tiny-rubric-v1", description="Politeness only (test plugin).", fingerprint="",
                  system_prompt="You rate replies.", intro="One quality:", outro="Judge the reply only.",
                  criteria=(Criterion("politeness", "politeness", "how polite the reply is",
                                      ("rude", "neutral", "very polite")),))

    class EchoJudge(Judge):  # scores from the prompt its rubric builds
        name = "echo"

        @property
        def model_id(self):
            return "echo"

        def score(self, items):
            return [JudgeScore({m: float(len(self.rubric.build_prompt(i.context, i.response, m)) % 10)
                                for m in self.metrics}) for i in items]

    class Plugin:
        @hookimpl
        def register_rubrics(self, register):
            register(tiny)

    isolated_registry.register_plugin(Plugin(), "tiny_rubrics")
    assert isolated_registry.plugins["tiny_rubrics"].hooks == ["register_rubrics"]
    entry = isolated_registry.rubrics()["tiny-rubric-v1"]
    assert entry.obj is tiny and entry.plugin == "tiny_rubrics"
    code, out, _ = call_main(["list", "rubrics"], capsys)
    assert code == 0 and re.search(r"^  tiny-rubric-v1 +Politeness only .*\[tiny_rubrics\]$", out, flags=re.M), out

    judge = EchoJudge()  # the only registered rubric
    assert judge.metrics == ("politeness",) and judge.metric_key("politeness") == "judge/echo/tiny-rubric-v1/politeness"
    prompt = tiny.build_prompt(["hello"], "thank you kindly", "politeness")
    assert prompt.startswith("One quality:\n\n1. Politeness (politeness): how polite the reply is. "
                             "0 = rude; 5 = neutral; 9 = very polite.\n\nJudge the reply only.")
    assert judge.score([JudgeInput(["hello"], "thank you kindly")])[0].scores == {"politeness": float(len(prompt) % 10)}

    isolated_registry.unregister_plugin("tiny_rubrics")
    assert isolated_registry.rubrics() == {}
    code, out, _ = call_main(["list", "rubrics"], capsys)
    assert code == 0 and out == "rubrics:\n  (none)\n"


def test_hook_register_judge_benchmarks(isolated_registry, capsys, tmp_path):
    """A plugin's judge benchmark (human ratings) is listed, and ``crsbench judge score-run``
    measures a run file against it: the core holds no dataset of its own."""
    from crsbench.judge import JudgeInput
    from crsbench.judge_validation import BenchmarkData, JudgeBenchmark, Unit, get_benchmark

    ratings = {("c1", 1): 0.0, ("c1", 3): 1.0, ("c2", 1): 2.0, ("c2", 3): 3.0, ("c3", 1): 1.0, ("c3", 3): 2.0}

    def load(path=None):
        units = [Unit(key=key, group=key[0], system="sys" + key[0][-1], half="only",
                      item=JudgeInput(["hi"], f"reply {key}"), labels={"helpfulness": label}, n_turns=key[1] + 1)
                 for key, label in ratings.items()]
        return BenchmarkData("tiny ratings", "0" * 64, {"turn": units})

    def read_run(path):
        return {tuple(row["key"]): {"helpfulness": row["pred"]} for row in json.loads(Path(path).read_text())}

    tiny = JudgeBenchmark(name="tiny-ratings", description="Six rated replies (test plugin).",
                          rubrics={"turn": "tiny-rubric-v1"}, aspects={"turn": ("helpfulness",)},
                          load=load, read_run=read_run, published=lambda path=None: {})

    class Plugin:
        @hookimpl
        def register_judge_benchmarks(self, register):
            register(tiny)

    isolated_registry.register_plugin(Plugin(), "tiny_ratings")
    assert isolated_registry.plugins["tiny_ratings"].hooks == ["register_judge_benchmarks"]
    assert isolated_registry.judge_benchmarks()["tiny-ratings"].obj is tiny and get_benchmark() is tiny
    code, out, _ = call_main(["list", "judge_benchmarks"], capsys)
    assert code == 0 and re.search(r"^  tiny-ratings +Six rated replies .*\[tiny_ratings\]$", out, flags=re.M), out

    run = tmp_path / "run.json"
    run.write_text(json.dumps([{"key": list(k), "pred": v * 2 + 1} for k, v in ratings.items()]))  # perfect order
    code, out, err = call_main(["judge", "score-run", str(run), "--name", "oracle", "--n-bootstrap", "0",
                                "--output", str(tmp_path / "rec.json")], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "rec.json").read_text())
    assert record["benchmark"] == "tiny-ratings" and record["data"]["half"] == "only"
    assert record["aspects"]["helpfulness"]["spearman"] == pytest.approx(1.0)
    assert record["aspects"]["helpfulness"]["n"] == 6

    isolated_registry.unregister_plugin("tiny_ratings")
    code, out, _ = call_main(["list", "judge_benchmarks"], capsys)
    assert code == 0 and out == "judge_benchmarks:\n  (none)\n"


def test_hook_register_report_sections(isolated_registry, capsys, tmp_path, crsbench_logger_restored):
    """A plugin's report sections appear in ``crsbench report`` after the core's tables, in
    registration order; a section that breaks costs one line, not the report."""
    seen = []

    def fit_seconds(results, labels):
        seen.append(([r["model"]["name"] for r in results], list(labels)))
        results[0]["model"]["name"] = "tampered"  # the next section must not see this
        return [("h2", "Tiny section"), ("p", "Seconds spent in fit, per run."),
                ("table", ["run", "model", "fit seconds"],
                 [[label, r["model"]["plugin"], str(r["timings"]["fit"])] for r, label in zip(results, labels)])]

    def model_names(results, labels):
        return [("p", "models: " + ", ".join(r["model"]["name"] for r in results))]

    def nothing(results, labels):
        return None

    def broken(results, labels):
        raise RuntimeError("no section today")

    def image(results, labels):
        return [("img", "/etc/passwd", "not a curve")]  # only the core copies images into a report

    class TinyReport:
        @hookimpl
        def register_report_sections(self, register):
            register(fit_seconds)
            register(nothing)
            register(broken)
            register(model_names)

    class LaterReport:
        @hookimpl
        def register_report_sections(self, register):
            register(image)

    class RunPlugin:
        @hookimpl
        def register_tasks(self, register):
            register(TinyTask)

        @hookimpl
        def register_models(self, register):
            register(NextItemModel)

        @hookimpl
        def register_metrics(self, register):
            register(FirstPlaceMetric())

    isolated_registry.register_plugin(RunPlugin(), "tiny_run")
    code, _, err = call_main(["run", "tiny-next-item", "--task", "tiny-task", "--device", "cpu", "--output-dir",
                              str(tmp_path / "runs"), "--n-bootstrap", "20", "--no-progress"], capsys)
    assert code == 0, err
    run_dir = next((tmp_path / "runs").iterdir())
    label = f"tiny-next-item ({run_dir.name})"

    isolated_registry.register_plugin(LaterReport(), "later_report")
    isolated_registry.register_plugin(TinyReport(), "tiny_report")  # registered last, ranks last
    assert isolated_registry.plugins["tiny_report"].hooks == ["register_report_sections"]
    assert [(e.name, e.plugin) for e in isolated_registry.report_sections()] == [
        ("image", "later_report"), *[(n, "tiny_report") for n in ("fit_seconds", "nothing", "broken", "model_names")]]
    code, out, err = call_main(["report", str(run_dir), "-o", str(tmp_path / "rep")], capsys)
    assert code == 0, err
    assert seen == [(["tiny-next-item"], [label])]
    md = (tmp_path / "rep" / "report.md").read_text()
    page = (tmp_path / "rep" / "report.html").read_text()
    assert md.index("## Metrics") < md.index("## Tiny section")
    assert "Seconds spent in fit, per run." in md and "<h2>Tiny section</h2>" in page
    fit = json.loads((run_dir / "result.json").read_text())["timings"]["fit"]
    assert f"| {label} | tiny_run | {fit} |" in md
    assert "models: tiny-next-item" in md and "tampered" not in md
    assert "Report section broken of plugin tiny_report failed: RuntimeError: no section today" in md
    assert "of plugin later_report failed: TypeError: not a report block" in md
    assert "<img" not in page and "![" not in md
    order = [md.index(s) for s in ("of plugin later_report failed", "## Tiny section", "of plugin tiny_report failed",
                                   "models: tiny-next-item")]
    assert order == sorted(order)

    isolated_registry.unregister_plugin("tiny_report")
    isolated_registry.unregister_plugin("later_report")
    code, out, err = call_main(["report", str(run_dir), "-o", str(tmp_path / "rep2")], capsys)
    assert code == 0, err
    md = (tmp_path / "rep2" / "report.md").read_text()
    assert "Tiny section" not in md and "failed" not in md


def test_a_failing_register_report_sections_is_recorded(isolated_registry, capsys):
    class Plugin:
        @hookimpl
        def register_report_sections(self, register):
            register("not callable")
            raise RuntimeError("no sections today")

    isolated_registry.register_plugin(Plugin(), "bad_sections")
    assert isolated_registry.report_sections() == []
    code, out, _ = call_main(["plugins"], capsys)
    assert code == 0
    assert ("error: register_report_sections: 'not callable' is not callable; not registered; "
            "register_report_sections: RuntimeError: no sections today") in out
