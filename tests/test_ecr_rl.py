"""ECR-RL end to end with the ``smoke`` profile and the real offline judge (SmolLM2-135M).

- it reuses the checkpoints of a matching ECR run in the same output directory;
- it judges, trains and validates a critic, runs TRL, compares the reward on held-out test
  contexts, and the harness adds judge metrics on a seeded sample;
- recommendation metrics equal ECR's (RL only touches the response generator);
- a critic below the Spearman threshold stops the run with a clear message, recorded in
  the result file; so does a critic that cannot rank the replies of one context (a judge
  plugin with random scores), while a learnable judge (reply length) passes that gate.
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
    assert 1 <= held["n"] <= 6 and 0 <= held["p_value"] <= 1  # one context per test dialogue (--limit 6)
    judge_keys = [k for k in result["metrics"] if k.startswith("judge/")]
    assert len(judge_keys) == 5 and all(result["metrics"][k]["n"] == 3 for k in judge_keys)
    # the judge id carries the digest of its settings (chat_template=false etc.)
    assert all(k.startswith(f"judge/{rl['judge']['id']}/") for k in judge_keys) and "~" in rl["judge"]["id"]
    # the critic is validated on contexts it never saw, within and across contexts
    critic = rl["critic"]
    assert critic["split"] == "by context" and critic["n_contexts_heldout"] == 4
    within = critic["combined"]["within_context"]
    assert within["n_contexts"] == 4 and within["n_pairs"] >= 1
    assert within["ci_low"] <= within["accuracy"] <= within["ci_high"]
    assert set(critic["combined"]["across_contexts"]) == {"spearman", "ci_low", "ci_high", "n_contexts"}
    # every reward component's spread within a prompt's completions, during RL
    components = rl["rl"]["components"]
    assert set(components) == {"critic", "bleu", "distinct", "rec_hit", "emotion", "length"}
    for name, comp in components.items():
        assert comp["steps"] == 2 and 0 <= comp["steps_constant_within_groups"] <= 2
        assert (comp["steps_constant_within_groups"] == 2) == (comp["within_group_std_mean"] < 1e-9), name
    for row in log_lines:
        assert all("group_std" in v for v in row["components"].values())
    # the evaluation judge on ECR's and ECR-RL's replies of the same held-out contexts
    judged = rl["heldout_judged"]
    assert judged["n_contexts"] == held["n"] and judged["n_judged"] + judged["n_failed"] == held["n"]
    assert judged["key"] == rl["judges"]["evaluation"]["id"] + "/ecr-subjective-v1"
    assert rl["judges"]["same_judge"] and rl["judges"]["evaluation"]["source"] == "--judge"
    mean = judged["length_controlled"]["mean"]
    assert {"intercept", "ci_low", "ci_high", "p_value", "slope_per_word", "length_matched"} <= set(mean)
    assert set(judged["paired"]) == set(judged["length_controlled"]) == set(rl["judge"]["metrics"]) | {"mean"}


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


JUDGES_PLUGIN = """
import hashlib

from crsbench import hookimpl
from crsbench.judge import Judge, JudgeScore


class NoiseJudge(Judge):
    name = "noise"
    description = "a score drawn from the reply's hash: no reply of a context is better than another"

    @property
    def model_id(self):
        return "noise-v1"

    def score(self, items):
        out = []
        for item in items:
            digest = hashlib.sha256(item.response.encode()).digest()
            out.append(JudgeScore({m: float(digest[k] % 10) for k, m in enumerate(self.metrics)}))
        return out


class WordsJudge(Judge):
    name = "words"
    description = "longer replies score higher (learnable from the critic's surface features)"

    @property
    def model_id(self):
        return "words-v1"

    def score(self, items):
        return [JudgeScore({m: min(9.0, len(i.response.split()) / 2) for m in self.metrics}) for i in items]


@hookimpl
def register_judges(register):
    register(NoiseJudge)
    register(WordsJudge)
"""


@pytest.fixture
def judges_site(fake_dist):
    return fake_dist("fake-judges", {"fake_judges": "fake_judges_plugin"}, {"fake_judges_plugin": JUDGES_PLUGIN})


def _gate_run(run_crsbench, runs, tmp_path, site, critic_judge, eval_judge):
    import shutil

    ecr_dir, _ = runs
    out = tmp_path / "out"
    shutil.copytree(ecr_dir, out / ecr_dir.name)  # reused, so no ECR training here
    return run_crsbench("run", "ecr-rl", "--task", "redial", "--profile", "smoke", "--limit", "6",
                        "--n-bootstrap", "20", "--no-progress", "--output-dir", out,
                        "--set", f"rl_stage.judge={{name: {critic_judge}}}", "--set", "rl_stage.min_within_accuracy=0.5",
                        "--set", "rl_stage.critic_data.n_contexts=40",
                        "--judge", eval_judge, "--judge-sample", "3", pythonpath=[site]), out / "ecr-rl_redial_smoke_s0_n6"


@pytest.mark.slow
def test_a_critic_that_cannot_rank_within_contexts_stops_the_run(runs, run_crsbench, tmp_path, judges_site):
    proc, run_dir = _gate_run(run_crsbench, runs, tmp_path, judges_site, "noise", "noise")
    assert proc.returncode == 3, proc.stderr
    assert "Stopped:" in proc.stderr and "cannot rank the replies of one context" in proc.stderr
    assert "Traceback" not in proc.stderr
    stopped = json.loads((run_dir / "result.json").read_text())
    assert "within-context pairwise accuracy" in stopped["extra"]["stopped"] and stopped["metrics"] == {}


@pytest.mark.slow
def test_a_learnable_judge_passes_the_within_context_gate(runs, run_crsbench, tmp_path, judges_site):
    proc, run_dir = _gate_run(run_crsbench, runs, tmp_path, judges_site, "words", "noise")
    assert proc.returncode == 0, proc.stderr
    rl = load(run_dir)["extra"]["rl"]
    within = rl["critic"]["combined"]["within_context"]
    assert within["ci_low"] > 0.5, within
    # critic data and evaluation came from different judges, and the result says which
    assert rl["judges"]["critic_data"]["model"] == "words-v1" and rl["judges"]["evaluation"]["model"] == "noise-v1"
    assert not rl["judges"]["same_judge"] and rl["heldout_judged"]["key"] == "noise-v1/ecr-subjective-v1"
    assert [k for k in load(run_dir)["metrics"] if k.startswith("judge/")][0].startswith("judge/noise-v1/")
