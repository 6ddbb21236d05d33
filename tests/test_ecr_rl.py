"""ECR-RL end to end with the ``smoke`` profile and the real offline judge (SmolLM2-135M).

- it reuses the checkpoints of a matching ECR run in the same output directory;
- it judges, trains and validates a critic, runs TRL, compares the reward on held-out test
  contexts, and the harness adds judge metrics on a seeded sample;
- recommendation metrics equal ECR's (RL only touches the response generator);
- a critic below the Spearman threshold stops the run with a clear message, recorded in
  the result file.
"""
from __future__ import annotations

import json

import pytest

from crsbench.runner import run

ARGS = dict(task_name="redial", profile="smoke", limit=6, n_bootstrap=20, progress=False, judge_sample=3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    ecr = run("ecr", output_dir=out, **{k: v for k, v in ARGS.items() if k != "judge_sample"})
    rl = run("ecr-rl", output_dir=out, **ARGS)
    return ecr, rl


def load(run_dir):
    return json.loads((run_dir / "result.json").read_text())


@pytest.mark.slow
def test_ecr_rl_pipeline(runs):
    ecr_dir, rl_dir = runs
    result = load(rl_dir)
    extra = result["extra"]
    assert extra["reused_ecr_run"] == str(ecr_dir)
    rl = extra["rl"]
    assert rl["judge"]["model"].startswith("SmolLM2")
    assert set(rl["critic"]["heads"]) == {"emotional_intensity", "emotional_persuasiveness",
                                          "logical_persuasiveness", "informativeness", "lifelikeness"}
    for head in rl["critic"]["heads"].values():
        assert "spearman" in head and "r2" in head
    log_lines = [json.loads(line) for line in (rl_dir / "checkpoints" / "rl" / "policy" / "rl_log.jsonl")
                 .read_text().splitlines()]
    assert len(log_lines) == 2
    for key in ("reward_mean", "reward_std", "kl", "loss", "completion_length", "components"):
        assert key in log_lines[0]
    assert set(log_lines[0]["components"]) == {"critic", "bleu", "distinct", "rec_hit", "emotion", "length"}
    held = rl["heldout_reward"]["total"]
    assert held["n"] == 12 and 0 <= held["p_value"] <= 1
    judge_keys = [k for k in result["metrics"] if k.startswith("judge/")]
    assert len(judge_keys) == 5 and all(result["metrics"][k]["n"] == 3 for k in judge_keys)


@pytest.mark.slow
def test_recommendation_is_unchanged_by_rl(runs):
    ecr, rl = (load(d)["metrics"] for d in runs)
    rec_keys = [k for k in ecr if k.startswith(("standard/", "dedup/"))]
    assert rec_keys
    assert {k: ecr[k] for k in rec_keys} == {k: rl[k] for k in rec_keys}


@pytest.mark.slow
def test_critic_gate_stops_rl(runs, run_crsbench, tmp_path):
    import shutil

    ecr_dir, _ = runs
    shutil.copytree(ecr_dir, tmp_path / ecr_dir.name)  # reused, so no ECR training here
    proc = run_crsbench("run", "ecr-rl", "--task", "redial", "--profile", "smoke", "--limit", "6",
                        "--n-bootstrap", "20", "--no-progress", "--output-dir", tmp_path,
                        "--set", "rl_stage.min_spearman=0.99", "--judge-sample", "3")
    assert proc.returncode == 3, proc.stderr
    assert "Stopped:" in proc.stderr and "Spearman" in proc.stderr
    assert "Traceback" not in proc.stderr
    stopped = json.loads((tmp_path / "ecr-rl_redial_smoke_s0_n6" / "result.json").read_text())
    assert "Spearman" in stopped["extra"]["stopped"] and stopped["metrics"] == {}


@pytest.mark.slow
def test_ecr_rl_runs_on_inspired_through_the_task_api(tmp_path):
    """A second task with a graph and no feedback: the whole ECR-RL pipeline, judged with the
    task's own default rubric."""
    rl_dir = run("ecr-rl", output_dir=tmp_path, **{**ARGS, "task_name": "inspired", "limit": 4})
    result = load(rl_dir)
    assert result["task"]["name"] == "inspired" and result["model"]["name"] == "ecr-rl"
    assert result["extra"]["stages"]["feedback_weighting"] == "off: the task has no feedback"
    rl = result["extra"]["rl"]
    assert rl["judge"]["rubric_version"] == "ecr-subjective-v1" and rl["critic"]["n_pairs"] > 0
    assert rl["rl"]["steps"] == 2 and rl["rl"]["stopped"] is None
    assert not [k for k in result["metrics"] if k.endswith("/auc") or "/rt@" in k]  # no feedback, not computed
    assert len([k for k in result["metrics"] if k.startswith("judge/")]) == 5
