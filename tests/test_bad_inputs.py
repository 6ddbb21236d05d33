"""Every bad input ends in exactly one ``Error:`` line and exit status 2, never a traceback,
and leaves what was written before unchanged (issue 21, "Tracebacks instead of one Error:
line"). The CLI runs in-process (``crsbench.cli.main``): an exception other than SystemExit
fails the test, so "no traceback" is checked by construction.

One table, ``CASES``: each row makes its bad input inside a shared world (a finished
``popularity`` run, a finished generating run, a small ReDial data directory in the official
layout, a leaderboard directory) and names the CLI arguments; the test hashes every file of
the world before and after the command.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from crsbench import KnowledgeGraph, Model, Task, TaskData, hookimpl
from crsbench.cli import main
from crsbench.judge import Judge, JudgeScore
from crsbench.metrics.base import MeanMetric, RECOMMENDATION
from crsbench.plugins import get_registry

REPO = Path(__file__).resolve().parent.parent
REDIAL_DATA = REPO / "tasks" / "redial" / "data"
PLUGIN = "test-bad-inputs"
PROGRESS = re.compile(r"^[\w -]+: +\d+%\|")


# -- a plugin with the third-party pieces the cases need ---------------------------------------
def _samples(split: str, n: int, items: list[int]) -> list[dict]:
    out = []
    for k in range(n):
        item = items[k % len(items)]
        out.append({"sample_id": f"{split}{k}:1", "dialog_id": f"{split}{k}", "turn": 1,
                    "context": [f"I liked book {item} a lot, any tips for {split} {k}?"], "context_roles": ["seeker"],
                    "context_items": [item], "context_entities": [item], "targets": [items[(k + 1) % len(items)]],
                    "response": "Try this one.", "response_template": "Try this one.", "response_entities": []})
    return out


class _Graph(KnowledgeGraph):
    def __init__(self, triples, item_ids):
        self.entity2id = {f"e{i}": i for i in range(6)}
        self.relation2id = {"r0": 0, "r1": 1}
        self.item_ids = item_ids
        self._triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)

    @property
    def triples(self):
        return self._triples


class _GraphTask(Task):
    """Six entities, the first four items; subclasses break one thing."""

    name = "test-graph-ok"
    version = "1"
    has_feedback = False
    triples = [(0, 0, 4), (1, 1, 5)]
    item_ids = [0, 1, 2, 3]

    def load(self, limit=None):
        items = [0, 1, 2, 3]
        kg = _Graph(self.triples, self.item_ids)
        return TaskData(splits={s: _samples(s, 4, items) for s in ("train", "valid", "test")}, items=items,
                        item_names={i: f"book {i}" for i in items}, kg=kg)

    def data_info(self):
        return {"variant": "inline", "sha256": "0" * 64, "files": {}}


class EdgeOutsideGraph(_GraphTask):
    name = "test-graph-edge"
    triples = [(0, 0, 4), (1, 1, 99)]  # entity 99 of 6


class ItemOutsideGraph(_GraphTask):
    name = "test-graph-item"
    item_ids = [0, 1, 2, 3, 42]


class TruncatedGraphFile(_GraphTask):
    """Reads ReDial's graph class from a directory whose entity2id.json.gz is cut short."""

    name = "test-graph-truncated"

    def load(self, limit=None):
        from crsbench_tasks.redial.kg import KnowledgeGraph as FileGraph

        FileGraph(Path(os.environ["TEST_TRUNCATED_KG"]))
        return super().load(limit)


class TruncatedGzipData(_GraphTask):
    """Its own loader reads a truncated .gz with plain gzip: an EOFError, which click would
    otherwise report as 'Aborted.' (exit 130, like Ctrl-C)."""

    name = "test-gzip-truncated"

    def load(self, limit=None):
        with gzip.open(os.environ["TEST_TRUNCATED_GZ"], "rt") as fh:
            fh.read()
        return super().load(limit)


class TypedModel(Model):
    """Records the config it receives, so a test can see the types --set produced."""

    name = "test-typed"
    profiles = {"default": {"k1": 1.2, "b": 0.75, "depth": 2, "name": "bm", "flag": False}}
    config_schema = {"b": __import__("crsbench.config", fromlist=["Param"]).Param(float, ge=0, le=1)}
    seen: list = []

    def fit(self, data):
        TypedModel.seen.append(dict(self.config))

    def recommend(self, batch):
        return [[] for _ in batch]


class CheckpointModel(Model):
    """Saves and resumes one epoch with ECR's checkpoint functions."""

    name = "test-checkpoint"

    def fit(self, data):
        import torch

        from crsbench_plugins.ecr.checkpoints import load_latest, save_epoch

        module = torch.nn.Linear(3, 2)
        optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
        stage = self.context.checkpoint_dir / "stage"
        if load_latest(stage, module, optimizer) is None:
            save_epoch(stage, 0, module, optimizer, {"epoch": 0})

    def recommend(self, batch):
        return [[] for _ in batch]


class EchoModel(Model):
    name = "test-echo-replies"
    generates = True

    def recommend(self, batch):
        return [list(s["context_items"]) for s in batch]

    def generate(self, batch):
        return [s["context"][-1] if s["context"] else "hello" for s in batch]


class FailingJudge(Judge):
    """Every call fails, as a judge server that is down."""

    name = "test-failing-judge"

    @property
    def model_id(self):
        return "failing"

    def score(self, items):
        return [JudgeScore(None, "connection refused") for _ in items]


class ExplodingMetric(MeanMetric):
    name = "test-exploding"
    kind = RECOMMENDATION

    def values(self, units):
        raise RuntimeError("boom")


class Plugin:
    @hookimpl
    def register_tasks(self, register):
        for task in (_GraphTask, EdgeOutsideGraph, ItemOutsideGraph, TruncatedGraphFile, TruncatedGzipData):
            register(task)

    @hookimpl
    def register_models(self, register):
        for model in (TypedModel, CheckpointModel, EchoModel):
            register(model)

    @hookimpl
    def register_judges(self, register):
        register(FailingJudge)


class MetricPlugin:
    @hookimpl
    def register_metrics(self, register):
        register(ExplodingMetric())


# -- helpers -------------------------------------------------------------------------------------
def cli(*args) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root, except run locks (they hold the last holder's pid) and
    run logs (a rerun appends to its run's log.txt by design)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock") and p.name != "log.txt"}


def write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    saved = {k: os.environ.get(k) for k in ("CRSBENCH_CACHE_DIR", "TEST_TRUNCATED_KG", "TEST_TRUNCATED_GZ")}
    os.environ["CRSBENCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    registry = get_registry()
    registry.register_plugin(Plugin(), PLUGIN)
    try:
        runs = root / "runs"
        assert cli("run", "popularity", "--task", "redial", "--limit", "2", "--n-bootstrap", "20",
                   "--output-dir", runs, "--no-progress") == 0
        assert cli("run", "test-echo-replies", "--task", "redial", "--limit", "3", "--n-bootstrap", "20",
                   "--output-dir", runs, "--no-progress") == 0
        assert cli("run", "test-checkpoint", "--task", "test-graph-ok", "--n-bootstrap", "0",
                   "--output-dir", runs, "--no-progress") == 0
        data = root / "data"  # official layout: 20 training and 5 test dialogues
        data.mkdir()
        with gzip.open(REDIAL_DATA / "train_subset_kgsf.jsonl.gz", "rt") as fh:
            (data / "train_data.jsonl").write_text("".join(next(fh) for _ in range(20)))
        with gzip.open(REDIAL_DATA / "test_data.jsonl.gz", "rt") as fh:
            (data / "test_data.jsonl").write_text("".join(next(fh) for _ in range(5)))
        with gzip.open(REDIAL_DATA / "movies_with_mentions.csv.gz", "rb") as fh:
            (data / "movies_with_mentions.csv").write_bytes(fh.read())
        board = root / "leaderboard" / "results" / "redial"
        board.mkdir(parents=True)
        shutil.copy(REPO / "leaderboards" / "results" / "redial" / "popularity-default-seed0-bundled.json", board)
        kg = root / "kg"
        kg.mkdir()
        for name in ("entity2id.json.gz", "relation2id.json.gz", "item_ids.json.gz"):
            shutil.copy(REDIAL_DATA / name, kg)
        whole = (kg / "entity2id.json.gz").read_bytes()
        (kg / "entity2id.json.gz").write_bytes(whole[: len(whole) // 2])
        os.environ["TEST_TRUNCATED_KG"] = str(kg)
        os.environ["TEST_TRUNCATED_GZ"] = str(kg / "entity2id.json.gz")
        yield {"root": root, "runs": runs, "data": data, "lb": root / "leaderboard",
               "pop": runs / "popularity_redial_default_s0_n2", "echo": runs / "test-echo-replies_redial_default_s0_n3",
               "ckpt": runs / "test-checkpoint_test-graph-ok_default_s0"}
    finally:
        registry.unregister_plugin(PLUGIN)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- the cases -------------------------------------------------------------------------------------
def data_dir_case(change):
    """A copy of the world's data directory with ``change(train, test)`` applied to the dialogues."""
    def setup(w, tmp):
        out = tmp / "bad-data"
        shutil.copytree(w["data"], out)
        train, test = read_jsonl(out / "train_data.jsonl"), read_jsonl(out / "test_data.jsonl")
        change(train, test)
        write_jsonl(out / "train_data.jsonl", train)
        write_jsonl(out / "test_data.jsonl", test)
        return ["run", "popularity", "--task", "redial", "--data-dir", out, "--output-dir", w["runs"],
                "--n-bootstrap", "0", "--no-progress"]
    return setup


def corrupt_run_case(run: str, file: str, content, command: str, other: str | None = None):
    """A copy of a finished run with one file replaced by ``content`` (bytes, or a function of the
    parsed JSON / JSON lines), then ``crsbench COMMAND COPY [OTHER RUN]``."""
    def setup(w, tmp):
        copy = tmp / "run-copy"
        shutil.copytree(w[run], copy)
        path = copy / file
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif file.endswith(".jsonl"):
            rows = read_jsonl(path)
            write_jsonl(path, [content(r) for r in rows])
        else:
            path.write_text(json.dumps(content(json.loads(path.read_text()))))
        return [*command.split(), copy, *([w[other]] if other else [])]
    return setup


def result_case(change):
    def setup(w, tmp):
        (path,) = (w["lb"] / "results" / "redial").glob("*.json")
        result = json.loads(path.read_text())
        change(result)
        path.write_text(json.dumps(result))
        return ["leaderboard", "build", "--root", w["lb"]]
    return setup


def run_args(*args, model="popularity", task="redial"):
    return lambda w, tmp: ["run", model, "--task", task, "--limit", "2", "--n-bootstrap", "0", "--no-progress",
                           "--output-dir", w["runs"], *args]


def set_case(*overrides, model="ecr", profile="smoke"):
    return run_args("--profile", profile, *[x for o in overrides for x in ("--set", o)], model=model)


def below_a_file(w, tmp):
    (tmp / "a-file").write_text("x")
    return ["run", "popularity", "--task", "redial", "--limit", "2", "--output-dir", tmp / "a-file" / "runs"]


def read_only_dir(w, tmp):
    if os.geteuid() != 0:
        ro = tmp / "read-only"
        ro.mkdir()
        ro.chmod(0o555)
        return ["run", "popularity", "--task", "redial", "--limit", "2", "--output-dir", ro / "runs"]
    try:  # root writes through file modes: /sys is read-only even for root where it is a sysfs mount
        (Path("/sys") / "crsbench-probe").mkdir()
    except OSError:
        return ["run", "popularity", "--task", "redial", "--limit", "2", "--output-dir", "/sys/crsbench-runs"]
    pytest.skip("running as root with a writable /sys: no read-only directory to test with")


def truncated_checkpoint(w, tmp):
    (weights,) = w["ckpt"].rglob("model.safetensors")
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    return ["run", "test-checkpoint", "--task", "test-graph-ok", "--n-bootstrap", "0", "--no-progress",
            "--output-dir", w["runs"]]


def report_below_a_file(w, tmp):
    (tmp / "a-file").write_text("x")
    return ["report", w["pop"], "-o", tmp / "a-file" / "report"]


def _set(d, key, value):
    d[key] = value
    return d


CASES = {
    # --data-dir files
    "data: empty train": (data_dir_case(lambda tr, te: tr.clear()), "no train samples"),
    "data: empty test": (data_dir_case(lambda tr, te: te.clear()), "no test samples"),
    "data: conversationId a list": (data_dir_case(lambda tr, te: _set(tr[0], "conversationId", [1, 2])),
                                    "conversationId is a list"),
    "data: messages strings": (data_dir_case(lambda tr, te: _set(te[0], "messages", ["hi", "there"])),
                               "messages[0] is a string"),
    "data: messages a dict": (data_dir_case(lambda tr, te: _set(te[0], "messages", {"text": "hi"})),
                              "messages is an object"),
    "data: movieMentions value an int": (data_dir_case(
        lambda tr, te: _set(te[0], "movieMentions", {k: 5 for k in te[0]["movieMentions"]})), "movieMentions["),
    "data: liked a list": (data_dir_case(
        lambda tr, te: [q.__setitem__("liked", [1]) for q in te[0]["initiatorQuestions"].values()]), ".liked is a list"),
    "data: KG edge outside the graph": (run_args(task="test-graph-edge"), "triples have an entity id outside"),
    "data: KG item outside the graph": (run_args(task="test-graph-item"), "graph item ids are outside"),
    "data: truncated KG .gz (task's graph class)": (run_args(task="test-graph-truncated"), "entity2id.json.gz"),
    "data: truncated .gz (EOFError)": (run_args(task="test-gzip-truncated"), "ended early"),
    # --set
    "--set stage1.lr=abc": (set_case("stage1.lr=abc"), "expected a number"),
    "--set stage2.batch_size=0": (set_case("stage2.batch_size=0"), ">= 1"),
    "--set stage2.epochs=-1": (set_case("stage2.epochs=-1"), ">= 1"),
    "--set stage1=3": (set_case("stage1=3"), "is a section"),
    "--set third-party k1=abc": (set_case("k1=abc", model="test-typed", profile="default"), "k1=abc: expected a number"),
    "--set third-party b out of range": (set_case("b=1.5", model="test-typed", profile="default"), "<= 1"),
    "--set third-party flag=1": (set_case("flag=1", model="test-typed", profile="default"), "boolean"),
    # run options
    "--seed -1": (run_args("--seed", "-1"), "--seed"),
    "--device bogus": (run_args("--device", "bogus"), "not a device name"),
    "--device cuda:7": (run_args("--device", "cuda:7"), "--device cuda:7"),
    "--output-dir below a file": (below_a_file, "--output-dir"),
    "--output-dir read-only": (read_only_dir, "--output-dir"),
    "report -o below a file": (report_below_a_file, "--output"),
    # run files
    "evaluate: config.json a list": (corrupt_run_case("pop", "config.json", lambda c: [c], "evaluate"),
                                     "not a run configuration"),
    "evaluate: config.json not UTF-8": (corrupt_run_case("pop", "config.json", b"\xff\xfe\x00", "evaluate"), "UTF-8"),
    "evaluate: config.json without task": (corrupt_run_case(
        "pop", "config.json", lambda c: {k: v for k, v in c.items() if k != "task"}, "evaluate"), "'task' is missing"),
    "evaluate: result.json a list": (corrupt_run_case("pop", "result.json", lambda r: [r], "evaluate"),
                                     "not a crsbench result file"),
    "evaluate: predictions binary": (corrupt_run_case("pop", "predictions.jsonl", b"\x1f\x8b\xff\n", "evaluate"),
                                     "UTF-8"),
    "samples: predictions binary": (corrupt_run_case("pop", "predictions.jsonl", b"\xff\xfe\n", "samples"), "UTF-8"),
    "samples: a record without targets": (corrupt_run_case(
        "pop", "predictions.jsonl", lambda r: {k: v for k, v in r.items() if k != "targets"}, "samples"), "targets"),
    "samples: item_names.json a list": (corrupt_run_case("pop", "item_names.json", lambda n: [1], "samples"),
                                        "item_names.json"),
    "compare: A's records without dialog_id": (corrupt_run_case(
        "pop", "predictions.jsonl", lambda r: {k: v for k, v in r.items() if k != "dialog_id"}, "compare", "pop"),
        "dialog_id"),
    "compare: A's config.json a list": (corrupt_run_case("pop", "config.json", lambda c: [], "compare", "pop"),
                                        "not a run configuration"),
    "leaderboard build: metric value a string": (result_case(
        lambda r: r["metrics"]["standard/recall@10"].__setitem__("value", "abc")), "not a number"),
    "leaderboard build: evaluation a list": (result_case(lambda r: r.__setitem__("evaluation", [1])),
                                             "evaluation is not an object"),
    "leaderboard build: result a list": (lambda w, tmp: _replace_result_with_list(w), "not a crsbench result"),
    # resume and judging
    "resume: truncated safetensors checkpoint": (truncated_checkpoint, "model.safetensors"),
    "evaluate --judge: every call fails": (lambda w, tmp: ["evaluate", w["echo"], "--judge", "test-failing-judge"],
                                           "judge calls failed"),
}


def _replace_result_with_list(w):
    (path,) = (w["lb"] / "results" / "redial").glob("*.json")
    path.write_text("[]")
    return ["leaderboard", "build", "--root", w["lb"]]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_changes_nothing(case, world, tmp_path, capsys):
    setup, fragment = CASES[case]
    originals = {}
    for key in ("pop", "echo", "ckpt", "lb", "data"):  # cases edit copies, or restore the original after
        originals[key] = tmp_path / "originals" / key
        shutil.copytree(world[key], originals[key])
    try:
        args = setup(world, tmp_path)
        before = snapshot(world["root"]) | {f"tmp/{k}": v for k, v in snapshot(tmp_path).items()}
        capsys.readouterr()
        code = cli(*args)
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines()  # not log lines, not tqdm progress bars
                 if line.strip() and not line.startswith("[crsbench]") and not PROGRESS.match(line)]
        assert code == 2, (code, captured.err)
        assert len(lines) == 1 and lines[0].startswith("Error: "), captured.err
        assert "Traceback" not in captured.err + captured.out
        assert fragment in lines[0], lines[0]
        after = snapshot(world["root"]) | {f"tmp/{k}": v for k, v in snapshot(tmp_path).items()}
        changed = sorted(name for name, digest in before.items() if after.get(name) != digest)
        assert not changed, f"files written before changed: {changed}"
    finally:
        for key, copy in originals.items():
            shutil.rmtree(world[key])
            shutil.copytree(copy, world[key])


def test_every_case_of_the_issue_is_in_the_table():
    """The issue's list, item by item (a case removed from the table fails here)."""
    needed = ["empty train", "empty test", "conversationId a list", "messages strings", "messages a dict",
              "movieMentions value an int", "liked a list", "KG edge outside", "KG item outside", "truncated KG",
              "stage1.lr=abc", "stage2.batch_size=0", "stage2.epochs=-1", "stage1=3", "k1=abc", "--seed -1",
              "--device bogus", "below a file", "read-only", "evaluate:", "compare:", "samples:",
              "leaderboard build", "truncated safetensors", "every call fails"]
    for fragment in needed:
        assert any(fragment in case for case in CASES), fragment


def test_set_values_reach_a_third_party_model_typed(world):
    TypedModel.seen.clear()
    assert cli("run", "test-typed", "--task", "test-graph-ok", "--set", "k1=2", "--set", "depth=3.0",
               "--set", "name=1.5", "--set", "flag=true", "--set", "b=1e-1", "--n-bootstrap", "0",
               "--no-progress", "--output-dir", world["root"] / "typed") == 0
    (config,) = TypedModel.seen
    assert config == {"k1": 2.0, "b": 0.1, "depth": 3, "name": "1.5", "flag": True}
    assert type(config["k1"]) is float and type(config["depth"]) is int and type(config["name"]) is str


def test_a_metric_plugin_that_raises_fails_alone(world, capsys):
    registry = get_registry()
    registry.register_plugin(MetricPlugin(), "test-exploding-metric")
    try:
        assert cli("run", "popularity", "--task", "redial", "--limit", "2", "--n-bootstrap", "10", "--no-progress",
                   "--output-dir", world["root"] / "metric") == 0
    finally:
        registry.unregister_plugin("test-exploding-metric")
    (result_path,) = (world["root"] / "metric").rglob("result.json")
    result = json.loads(result_path.read_text())
    failed = result["metrics"]["standard/test-exploding"]
    assert failed["value"] is None and "test-exploding-metric" in failed["failed"] and "boom" in failed["failed"]
    assert isinstance(result["metrics"]["standard/recall@10"]["value"], float)  # the others are computed
    assert any("test-exploding" in note and "test-exploding-metric" in note for note in result["notes"])
    assert "test-exploding-metric" in capsys.readouterr().out  # the printed notes name the plugin


def test_the_seed_is_checked_by_the_runner_too(world):
    from crsbench.errors import UserError
    from crsbench.runner import run

    with pytest.raises(UserError, match="seed"):
        run("popularity", "redial", seed=-1, output_dir=world["root"] / "api", limit=2)


def test_report_has_side_by_side_only_for_runs_that_generate(world, tmp_path):
    assert cli("report", world["pop"], "-o", tmp_path / "recommend-only") == 0
    assert "Side by side" not in (tmp_path / "recommend-only" / "report.md").read_text()
    assert cli("report", world["echo"], "-o", tmp_path / "generating") == 0
    text = (tmp_path / "generating" / "report.md").read_text()
    assert "## Side by side" in text and "test-echo-replies" in text.split("## Side by side", 1)[1]


def test_shipped_profiles_satisfy_their_own_schema():
    from crsbench.config import schema_violations

    for name, entry in get_registry().models().items():
        model = entry.obj
        for profile, config in model.profiles.items():
            assert schema_violations(config, getattr(model, "config_schema", None)) == [], (name, profile)


def test_null_is_taken_where_a_profile_of_the_model_has_it():
    from crsbench.config import apply_overrides
    from crsbench.errors import UserError

    ecr = get_registry().models()["ecr"].obj
    cpu = ecr.profiles["cpu"]
    assert cpu["lm"]["pretrain"] is not None and ecr.profiles["paper"]["lm"]["pretrain"] is None
    assert apply_overrides(cpu, ["lm.pretrain=null"], ecr.config_schema, ecr.profiles.values())["lm"]["pretrain"] is None
    with pytest.raises(UserError, match="null is not allowed"):
        apply_overrides(cpu, ["stage1.lr=null"], ecr.config_schema, ecr.profiles.values())
    replaced = apply_overrides(cpu, ["stage2.feedback_weights={liked: 3, disliked: 1, unknown: 0}"], ecr.config_schema)
    assert replaced["stage2"]["feedback_weights"] == {"liked": 3.0, "disliked": 1.0, "unknown": 0.0}
    with pytest.raises(UserError, match=r"stage2.feedback_weights.liked.*>= 0"):
        apply_overrides(cpu, ["stage2.feedback_weights={liked: -1}"], ecr.config_schema)
