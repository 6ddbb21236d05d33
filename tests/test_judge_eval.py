"""Harness-side judging: a seeded sample of test dialogues, judge metrics with CIs, pairing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from crsbench import Model, hookimpl
from crsbench.judge import Judge, JudgeScore
from crsbench_plugins.judges.rubrics import ECR_SUBJECTIVE

METRICS, RUBRIC_VERSION = ECR_SUBJECTIVE.metrics, ECR_SUBJECTIVE.name
from crsbench.plugins import get_registry
from crsbench.runner import rescore, run


class WordCountJudge(Judge):
    """Scores every metric with the reply's word count (capped at 9): easy to check by hand."""

    name = "test-wordcount"

    @property
    def model_id(self):
        return "wordcount"

    def score(self, items):
        return [JudgeScore({m: float(min(9, len(i.response.split()))) for m in METRICS}) for i in items]


class ScaledWordCountJudge(WordCountJudge):
    """The word count times option ``scale``: a setting that changes the scores."""

    name = "test-scaled-wordcount"

    def settings(self):
        return {"scale": float(self.options.get("scale", 1.0))}

    def score(self, items):
        k = self.settings()["scale"]
        return [JudgeScore({m: float(min(9, k * len(i.response.split()))) for m in METRICS}) for i in items]


class EchoModel(Model):
    """Replies with the last context turn (a generating model without training)."""

    name = "test-echo"
    generates = True

    def recommend(self, batch):
        return [list(s["context_items"])[::-1] for s in batch]

    def generate(self, batch):
        return [(s["context"][-1] if s["context"] else "hi") for s in batch]


class Plugin:
    @hookimpl
    def register_models(self, register):
        register(EchoModel)

    @hookimpl
    def register_judges(self, register):
        register(WordCountJudge)
        register(ScaledWordCountJudge)


@pytest.fixture
def plugin():
    registry = get_registry()
    registry.register_plugin(Plugin(), "test-judge-eval")
    yield
    registry.unregister_plugin("test-judge-eval")


def test_run_with_judge_and_evaluate_with_judge_agree(plugin, tmp_path):
    judged = run("test-echo", "redial", output_dir=tmp_path / "a", limit=12, n_bootstrap=50, progress=False,
                 judge="test-wordcount", judge_sample=5)
    result = json.loads((judged / "result.json").read_text())
    key = f"judge/wordcount/{RUBRIC_VERSION}/lifelikeness"
    assert result["metrics"][key]["n"] == 5
    records = [json.loads(line) for line in (judged / "predictions.jsonl").read_text().splitlines()]
    scored = [r for r in records if "judge" in r]
    assert len(scored) == 5 and len({r["dialog_id"] for r in scored}) == 5   # one turn per dialogue
    expected = np.mean([min(9, len(r["response"].split())) for r in scored])
    assert result["metrics"][key]["value"] == pytest.approx(expected)
    assert result["metrics"][key]["ci_low"] <= expected <= result["metrics"][key]["ci_high"]

    plain = run("test-echo", "redial", output_dir=tmp_path / "b", limit=12, n_bootstrap=50, progress=False)
    assert not any(k.startswith("judge/") for k in json.loads((plain / "result.json").read_text())["metrics"])
    metrics = rescore(plain, judge="test-wordcount", judge_sample=5, progress=False)
    assert metrics[key] == result["metrics"][key]  # same seeded sample, same scores, same CI


def test_judge_needs_a_generating_model(plugin, tmp_path):
    from crsbench.errors import UserError

    with pytest.raises(UserError, match="does not generate"):
        run("popularity", "redial", output_dir=tmp_path, limit=3, judge="test-wordcount", progress=False)


def test_judge_ids_carry_their_settings_and_compare_refuses_to_pair_other_settings(plugin, tmp_path):
    from crsbench.compare import compare_runs
    from crsbench.judge import settings_digest

    runs = {}
    for name, scale in (("a", 1.0), ("b", 1.0), ("c", 0.5)):
        runs[name] = run("test-echo", "redial", output_dir=tmp_path / name, limit=12, n_bootstrap=50,
                         progress=False, judge="test-scaled-wordcount", judge_options=(f"scale={scale}",),
                         judge_sample=5)
    results = {k: json.loads((d / "result.json").read_text()) for k, d in runs.items()}
    judge_id = f"wordcount~{settings_digest({'scale': 1.0})}"
    assert results["a"]["extra"]["judge"]["id"] == judge_id
    assert f"judge/{judge_id}/{RUBRIC_VERSION}/lifelikeness" in results["a"]["metrics"]
    other = results["c"]["extra"]["judge"]["id"]
    assert other != judge_id and other.startswith("wordcount~")

    same = compare_runs(runs["a"], runs["b"], n_bootstrap=50)
    assert f"judge/{judge_id}/{RUBRIC_VERSION}/lifelikeness" in same and "Not paired" not in same
    differ = compare_runs(runs["a"], runs["c"], n_bootstrap=50)
    assert "judge/" not in differ.split("\n", 2)[2].split("Not paired")[0]  # no judge row is paired
    assert "Not paired: judge wordcount/ecr-subjective-v1 scored A with {'scale': 1.0} and B with {'scale': 0.5}" \
        in differ

    # an older run whose key has no digest: the settings its result file recorded decide
    for name in ("a", "c"):
        path = runs[name] / "predictions.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        for r in records:
            if "judge" in r:
                r["judge"] = {f"wordcount/{RUBRIC_VERSION}": next(iter(r["judge"].values()))}
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        result = json.loads((runs[name] / "result.json").read_text())
        result["extra"]["judge"]["key"] = f"wordcount/{RUBRIC_VERSION}"
        (runs[name] / "result.json").write_text(json.dumps(result))
    legacy = compare_runs(runs["a"], runs["c"], n_bootstrap=50)
    assert "Not paired: judge wordcount/ecr-subjective-v1" in legacy
    assert f"judge/wordcount/{RUBRIC_VERSION}/" not in legacy.split("Not paired")[0]
