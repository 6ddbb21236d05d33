"""Runs that cannot lie: a changed input is never silently reused, stored predictions are
re-scored only as what they are, and metrics mean what the README says (issue 21, "Silent
wrong results"). Every test runs real runs of the cheap baselines on real ReDial dialogues."""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from crsbench.cli import main
from crsbench.errors import UserError

DATA = Path(__import__("crsbench_tasks.redial", fromlist=["x"]).__path__[0]) / "data"
QUICK = ("--n-bootstrap", "10", "--no-progress")


def cli(capsys, *args) -> tuple[int, str]:
    """The CLI in this process: (exit status, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[crsbench]")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    return lines[0]


def digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "log.txt"}


def make_data_dir(path: Path, n_test: int = 4, n_train: int = 60, duplicate_test: bool = False) -> Path:
    """The official ReDial layout, cut from the bundled files."""
    path.mkdir(parents=True)
    with gzip.open(DATA / "movies_with_mentions.csv.gz", "rb") as fin, open(path / "movies_with_mentions.csv", "wb") as fout:
        shutil.copyfileobj(fin, fout)
    with gzip.open(DATA / "test_data.jsonl.gz", "rt", encoding="utf-8") as fin:
        test = [next(fin) for _ in range(n_test)]
    if duplicate_test:
        test.append(test[1])
    (path / "test_data.jsonl").write_text("".join(test), encoding="utf-8")
    with gzip.open(DATA / "train_subset_kgsf.jsonl.gz", "rt", encoding="utf-8") as fin:
        (path / "train_data.jsonl").write_text("".join(next(fin) for _ in range(n_train)), encoding="utf-8")
    return path


# -- 1. a changed input is never reused on resume ---------------------------------------------
def test_changed_data_in_a_data_dir_gets_a_run_of_its_own(tmp_path, capsys):
    data = make_data_dir(tmp_path / "redial-full")
    out = tmp_path / "runs"
    args = ("run", "popularity", "--task", "redial", "--data-dir", data, "--limit", "3", "--output-dir", out, *QUICK)
    assert cli(capsys, *args)[0] == 0
    (first,) = [p for p in out.iterdir() if p.is_dir()]
    before = digest_tree(first)
    sha_before = json.loads((first / "result.json").read_text())["task"]["data"]["sha256"]

    # the case: every "liked" in the training data set to 0, then the same command
    rows = [json.loads(line) for line in (data / "train_data.jsonl").read_text().splitlines()]
    for row in rows:
        for answers in (row.get("respondentQuestions") or {}, row.get("initiatorQuestions") or {}):
            for answer in answers.values() if isinstance(answers, dict) else ():
                answer["liked"] = 0
    (data / "train_data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli(capsys, *args)[0] == 0

    dirs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(dirs) == 2, dirs  # a new run directory, not the old checkpoints
    second = next(d for d in dirs if d != first)
    assert digest_tree(first) == before  # the earlier run is untouched
    result = json.loads((second / "result.json").read_text())
    from crsbench_tasks.redial.task import RedialTask

    assert result["task"]["data"]["sha256"] == RedialTask(str(data)).data_sha256 != sha_before
    assert json.loads((second / "config.json").read_text())["identity"]["task"]["data"]["sha256"] == \
        result["task"]["data"]["sha256"]


@pytest.mark.parametrize("change, expected", [
    ("model_version", "identity.model.version: 1.0 -> 1.1"),
    ("task_version", "identity.task.version: 1.0 -> 9.9"),
    ("plugin_version", "identity.plugins.model: crsbench"),
])
def test_a_changed_model_task_or_plugin_version_is_not_resumed(change, expected, tmp_path, capsys, monkeypatch):
    out = tmp_path / "runs"
    args = ("run", "popularity", "--task", "redial", "--limit", "2", "--output-dir", out, *QUICK)
    assert cli(capsys, *args)[0] == 0
    run_dir = out / "popularity_redial_default_s0_n2"
    before = digest_tree(run_dir)
    if change == "model_version":
        from crsbench_plugins.baselines.models import PopularityModel

        monkeypatch.setattr(PopularityModel, "version", "1.1")
    elif change == "task_version":
        from crsbench_tasks.redial.task import RedialTask

        monkeypatch.setattr(RedialTask, "version", "9.9")
    else:
        from crsbench.plugins import PluginRegistry

        real = PluginRegistry.provenance
        monkeypatch.setattr(PluginRegistry, "provenance",
                            lambda self, name: {**real(self, name), "version": "7.0"} if name == "baselines"
                            else real(self, name))
    code, err = cli(capsys, *args)
    line = one_error_line(err)
    assert code == 2 and expected in line, line
    assert "--output-dir" in line and "pass --fresh" not in line  # never a --fresh that deletes that run
    assert digest_tree(run_dir) == before


def test_a_run_dir_without_a_recorded_identity_is_not_resumed(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ("run", "popularity", "--task", "redial", "--limit", "2", "--output-dir", out, *QUICK)
    assert cli(capsys, *args)[0] == 0
    config_path = out / "popularity_redial_default_s0_n2" / "config.json"
    old = json.loads(config_path.read_text())
    del old["identity"]  # as crsbench wrote it before it recorded one
    config_path.write_text(json.dumps(old))
    code, err = cli(capsys, *args)
    assert code == 2 and "records no run identity" in one_error_line(err)


# -- 2. evaluate re-scores only the predictions the result came from ---------------------------
def baseline_run(out: Path, model: str, limit: int) -> Path:
    """A finished run of a baseline on the first ``limit`` test dialogues."""
    with pytest.raises(SystemExit) as exit_info:
        main(["run", model, "--task", "redial", "--limit", str(limit), "--output-dir", str(out), *QUICK])
    assert exit_info.value.code == 0
    return out / f"{model}_redial_default_s0_n{limit}"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    return baseline_run(tmp_path_factory.mktemp("runs"), "repeat-context", 6)


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, target)
    return target


@pytest.mark.parametrize("damage", ["truncated", "empty", "other samples"])
def test_evaluate_refuses_predictions_that_are_not_the_runs(damage, finished_run, tmp_path, capsys):
    run_dir = copy_run(finished_run, tmp_path)
    path = run_dir / "predictions.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    if damage == "truncated":
        path.write_text("".join(lines[: len(lines) // 2]))
    elif damage == "empty":
        path.write_text("")
    else:
        rows = [json.loads(line) for line in lines]
        rows[0]["sample_id"] = "not-a-test-sample"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = (run_dir / "result.json").read_bytes()
    code, err = cli(capsys, "evaluate", run_dir)
    assert code == 2 and "predictions" in one_error_line(err)
    assert (run_dir / "result.json").read_bytes() == before


def test_evaluate_records_which_crsbench_rescored(finished_run, tmp_path, capsys):
    from crsbench import __version__

    run_dir = copy_run(finished_run, tmp_path)
    before = json.loads((run_dir / "result.json").read_text())
    assert cli(capsys, "evaluate", run_dir)[0] == 0
    after = json.loads((run_dir / "result.json").read_text())
    assert after["metrics"] == before["metrics"]
    assert after["rescored"]["crsbench_version"] == __version__ and "numpy" in after["rescored"]["libraries"]
    assert after["environment"] == before["environment"]  # the run's own record stays


# -- 3. a test dialogue that appears twice is not scored twice --------------------------------
def test_a_duplicated_test_dialogue_in_a_data_dir_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CRSBENCH_CACHE_DIR", str(tmp_path / "cache"))  # the task reads the files itself
    data = make_data_dir(tmp_path / "redial-full", duplicate_test=True)
    code, err = cli(capsys, "run", "popularity", "--task", "redial", "--data-dir", data,
                    "--output-dir", tmp_path / "runs", *QUICK)
    line = one_error_line(err)
    assert code == 2 and "appears twice" in line and "test_data.jsonl" in line
    assert not list((tmp_path / "runs").glob("*/result.json"))


def test_a_duplicated_test_sample_is_never_scored_twice(finished_run, tmp_path, capsys):
    run_dir = copy_run(finished_run, tmp_path)
    lines = (run_dir / "predictions.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "predictions.jsonl").write_text("".join(lines[:-1] + [lines[0]]))  # same count, one twice
    before = (run_dir / "result.json").read_bytes()
    code, err = cli(capsys, "evaluate", run_dir)
    assert code == 2 and "appears twice" in one_error_line(err)
    assert (run_dir / "result.json").read_bytes() == before


# -- 4. rankings and stored ranks are validated ------------------------------------------------
@pytest.mark.parametrize("field, value, fragment", [
    ("rank", -1, "rank -1"), ("rank", 0, "rank 0"), ("rank", "3", "rank '3'"), ("rank", 2.5, "rank 2.5"),
    ("rank", True, "rank True"), ("rank", float("nan"), "rank nan"), ("feedback", "Liked", "feedback 'Liked'"),
])
def test_crafted_stored_ranks_are_refused(field, value, fragment, finished_run, tmp_path, capsys):
    run_dir = copy_run(finished_run, tmp_path)
    path = run_dir / "predictions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    target = next(r for r in rows if r["targets"])["targets"][0]
    target[field] = value
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = (run_dir / "result.json").read_bytes()
    code, err = cli(capsys, "evaluate", run_dir)
    line = one_error_line(err)
    assert code == 2 and fragment in line, line
    assert (run_dir / "result.json").read_bytes() == before


@pytest.fixture(scope="module")
def two_samples():
    from crsbench_tasks.redial.task import RedialTask

    data = RedialTask().load(limit=2)
    return [s for s in data.splits["test"] if s["targets"]][:2], data.items


@pytest.mark.parametrize("ranking, fragment", [
    (["3"], "'3' (str)"), ([float("nan")], "nan (float)"), ([True, False], "True (bool)"),
    ("abc", "is a str"), ([1.0, 2.0], "1.0 (float)"), ([None], "None (NoneType)"),
])
def test_a_model_returning_a_bad_ranking_is_refused(ranking, fragment, two_samples):
    from crsbench.evaluation import predict
    from crsbench.model import Model, RunContext

    class Bad(Model):
        name = "bad"

        def recommend(self, batch):
            return [ranking for _ in batch]

    samples, items = two_samples
    with pytest.raises(UserError, match="model 'bad' returned an invalid ranking for sample") as info:
        predict(Bad({}, RunContext(run_dir=Path("."))), samples, items, progress=False)
    assert fragment in str(info.value)


def test_integer_rankings_of_any_integer_type_are_accepted(two_samples):
    from crsbench.evaluation import predict
    from crsbench.model import Model, RunContext

    samples, items = two_samples
    target = samples[0]["targets"][0]

    class Good(Model):
        name = "good"

        def recommend(self, batch):
            return [np.array([target, items[0]], dtype=np.int32) for _ in batch]

    records = predict(Good({}, RunContext(run_dir=Path("."))), samples, items, progress=False)
    assert records[0]["targets"][0]["rank"] == 1


def test_a_metric_value_is_never_written_as_infinity():
    from crsbench.evaluation import score_records
    from crsbench.metrics.base import RECOMMENDATION, MeanMetric

    class Inf(MeanMetric):
        name = "inf"
        kind = RECOMMENDATION

        def values(self, units):
            return np.full(len(units), np.inf), np.ones(len(units), dtype=bool)

    records = [{"sample_id": "a", "dialog_id": "d", "targets": [{"item": 1, "feedback": "liked", "rank": 1}],
                "context_items": [], "context_item_ranks": [], "top": [1], "response": None,
                "reference": "", "hyp_items": 0}]
    cell = score_records(records, {"inf": Inf()}, ["standard"], n_boot=5)["standard/inf"]
    assert cell["value"] is None
    json.dumps(cell, allow_nan=False)  # standard JSON: no Infinity / NaN


# -- 6. --set and --limit runs have their own directories and published names ------------------
def test_set_overrides_get_their_own_run_directory(tmp_path, capsys):
    out = tmp_path / "runs"
    base = ("run", "bm25", "--task", "redial", "--limit", "2", "--output-dir", out, *QUICK)
    assert cli(capsys, *base)[0] == 0
    default = out / "bm25_redial_default_s0_n2"
    before = digest_tree(default)
    from crsbench_plugins.baselines.bm25 import BM25Model

    k1 = float(BM25Model.profiles["default"]["k1"])
    other = k1 + 1.0
    assert cli(capsys, *base, "--set", f"k1={other}")[0] == 0
    assert digest_tree(default) == before  # the default run is untouched
    assert cli(capsys, *base, "--set", f"k1={k1}")[0] == 0  # the profile's own value: the default run, resumed
    dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(dirs) == 2 and dirs[0] == default.name and dirs[1].startswith(default.name + "_set-"), dirs
    result = json.loads((out / dirs[1] / "result.json").read_text())
    assert result["model"]["overrides"] == {"k1": other} and result["model"]["config"]["k1"] == other
    assert any("--set" in note and f"k1={other}" in note for note in result["notes"])

    from crsbench.leaderboard import publish

    published = [publish(out / name, tmp_path / "lb") for name in dirs]
    assert len(set(published)) == 2 and "-set" in published[1].name and published[1].name.endswith("-n2.json")
    md = (tmp_path / "lb" / "redial.md").read_text()
    assert f"| default + k1={other} |" in md  # not shown as plain "default"


def test_a_limited_or_overridden_run_never_takes_the_full_results_file(finished_run, tmp_path):
    from crsbench.leaderboard import published_name, publish
    from crsbench.results import read_result

    limited = read_result(finished_run)
    assert limited["evaluation"]["limit"] == 6
    assert any("--limit 6" in note for note in limited["notes"])
    full = dict(limited, evaluation=dict(limited["evaluation"], limit=None))
    overridden = dict(full, model=dict(full["model"], overrides={"k1": 2.0}))
    names = {published_name(limited), published_name(full), published_name(overridden)}
    assert len(names) == 3 and published_name(limited).endswith("-n6.json")

    root = tmp_path / "lb"
    full_file = root / "results" / "redial" / published_name(full)
    full_file.parent.mkdir(parents=True)
    full_file.write_text(json.dumps(full))  # stands for the full-split result
    before = full_file.read_bytes()
    target = publish(finished_run, root)
    assert target.name == published_name(limited) and target != full_file
    assert full_file.read_bytes() == before


# -- 7. metric definitions ----------------------------------------------------------------------
def generation_units(hyps, refs):
    from crsbench.metrics.base import GENERATION, Units

    return Units(GENERATION, np.arange(len(hyps)), {"hyp": hyps, "ref": refs, "hyp_items": np.zeros(len(hyps))})


def test_bleu_averages_over_non_empty_replies_as_ecr_and_unicrs():
    from nltk.translate.bleu_score import sentence_bleu

    from crsbench.metrics.generation import SentenceBLEU

    ref = "have you seen the matrix it is great"
    hyp = "have you seen the matrix"
    alone = sentence_bleu([ref.split()], hyp.split(), (1, 0, 0, 0))
    assert 0 < alone < 1
    metric = SentenceBLEU(1)
    units = generation_units(["", hyp, "   "], [ref, ref, ref])
    prepared = metric.prepare(units)
    # ECR / UniCRS: sum of sentence BLEU over replies / number of non-empty replies
    assert metric.score(prepared, np.ones(3)) == pytest.approx(alone)
    assert metric.count(prepared, 3) == 1


@pytest.mark.parametrize("text", ["Этот фильм очень хороший", "我喜欢这部电影", "Ο Νονός είναι ταινία"])
def test_rouge_of_identical_non_latin_text_is_one(text):
    from crsbench.metrics.generation import Rouge

    units = generation_units([text, "the godfather"], [text, "the godfather"])
    for variant in ("1", "2", "L"):
        assert Rouge(variant).compute(units) == pytest.approx(1.0), variant


def test_rouge_of_english_text_is_unchanged_by_the_tokenizer():
    from rouge_score.rouge_scorer import RougeScorer

    from crsbench.metrics.generation import Rouge

    hyp, ref = "Have you seen Heat (1995)? It's great!", "I loved heat, it's a great film from 1995"
    units = generation_units([hyp], [ref])
    expected = RougeScorer(["rougeL"]).score(ref, hyp)["rougeL"].fmeasure
    assert Rouge("L").compute(units) == pytest.approx(expected)


def test_n_of_rt_and_auc_counts_liked_targets_and_pairs():
    from crsbench.evaluation import score_records
    from crsbench.metrics.recommendation import AUC, RecallAtK, RTAtK

    feedback = ["liked", "liked", "liked", "disliked", "disliked", "unknown"]
    records = [{"sample_id": f"s{i}", "dialog_id": f"d{i}", "targets": [{"item": i, "feedback": fb, "rank": i + 1}],
                "context_items": [], "context_item_ranks": [], "top": [], "response": None, "reference": "",
                "hyp_items": 0} for i, fb in enumerate(feedback)]
    metrics = {"rt@10": RTAtK(10), "auc": AUC(), "recall@10": RecallAtK(10)}
    out = score_records(records, metrics, ["standard"], n_boot=20)
    assert out["standard/rt@10"]["n"] == 3  # liked targets
    assert out["standard/auc"]["n"] == 6  # liked x disliked pairs
    assert out["standard/recall@10"]["n"] == 6  # every target
    assert out["standard/auc"]["value"] == 1.0 and not math.isnan(out["standard/rt@10"]["value"])


def test_a_reusing_model_finds_only_a_twin_run_made_from_the_same_data(tmp_path):
    """ecr-rl copies the checkpoints of the ecr run beside it (crsbench.runs.twin_run): found
    whatever its --set suffix, never one whose recorded task data differ."""
    from crsbench.runs import twin_run

    def make(name, sha, config):
        (tmp_path / name).mkdir()
        identity = {"task": {"name": "redial", "version": "1.0", "data": {"sha256": sha}}}
        (tmp_path / name / "config.json").write_text(json.dumps({**config, "identity": identity}))
        return tmp_path / name

    mine = make("ecr-rl_redial_smoke_s0_n6_set-0123abcd", "a" * 64, {"model_config": {"x": 1, "rl": 2}})
    make("ecr_redial_smoke_s0_n6", "b" * 64, {"model_config": {"x": 1}})  # other data
    wanted = make("ecr_redial_smoke_s0_n6_set-89abcdef", "a" * 64, {"model_config": {"x": 1}})
    make("ecr_redial_smoke_s0_n6_set-00000000", "a" * 64, {"model_config": {"x": 2}})
    accept = lambda config: config["model_config"] == {"x": 1}  # noqa: E731
    assert twin_run(mine, "ecr-rl", "ecr", accept) == wanted
    (wanted / "config.json").unlink()
    assert twin_run(mine, "ecr-rl", "ecr", accept) is None


def register_repeat_model(registry, name: str, profiles: dict | None = None) -> str:
    """Register, in an isolated registry, the redial task, the built-in metrics and a model
    called ``name`` that re-lists the context items (packaged as crsbench 0.1.0)."""
    from crsbench import Model, hookimpl
    from crsbench.metrics import plugin as builtin_metrics
    from crsbench.plugins import PluginInfo
    from crsbench_tasks.redial import plugin as redial

    model = type("Repeat", (Model,), {"name": name, "profiles": profiles or {"default": {}},
                                      "recommend": lambda self, batch: [list(s["context_items"]) for s in batch]})

    class Plugin:
        @hookimpl
        def register_models(self, register):
            register(model)

    for module, plugin in ((redial, "redial"), (builtin_metrics, "builtin_metrics"), (Plugin(), "repeat")):
        registry.register_plugin(module, plugin, PluginInfo(plugin, plugin, "crsbench", "0.1.0"))
    return name


def test_a_profile_holding_a_tuple_resumes_its_own_run(isolated_registry, tmp_path):
    """config.json reads a tuple back as a list: the same command must still resume."""
    from crsbench.runner import run

    register_repeat_model(isolated_registry, "tupled", {"default": {"betas": (0.9, 0.999)}})
    first = run("tupled", "redial", limit=2, n_bootstrap=5, progress=False, output_dir=tmp_path)
    assert run("tupled", "redial", limit=2, n_bootstrap=5, progress=False, output_dir=tmp_path) == first
