"""ECR-RL end to end with the ``smoke`` profile and the real learned judges.

- it reuses the checkpoints of a matching ECR run in the same output directory;
- the reward judge and the (different) evaluation judge pass the validity gate; an
  unvalidated judge, or the same judge for both, stops the run;
- it runs TRL for each seed and a control arm, compares the reward on held-out test
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
def test_ecr_after_the_main_job_reuses_its_ecr_stages(runs, tmp_path):
    """`crsbench run ecr` beside a finished ecr-rl run of the same ECR configuration copies
    its ECR stages (not the RL policies) and only predicts: the same recommendations."""
    import shutil

    _, rl_dir = runs
    shutil.copytree(rl_dir, tmp_path / rl_dir.name)
    ecr_dir = run("ecr", output_dir=tmp_path, **{k: v for k, v in ARGS.items() if k != "judge_sample"})
    result, rl_result = load(ecr_dir), load(rl_dir)
    assert result["extra"]["reused_ecr_rl_run"] == str(tmp_path / rl_dir.name)
    assert not (ecr_dir / "checkpoints" / "rl").exists()
    # a resumed run (here: predictions removed) still names the run its stages came from
    (ecr_dir / "result.json").unlink()
    (ecr_dir / "predictions.jsonl").unlink()
    again = run("ecr", output_dir=tmp_path, **{k: v for k, v in ARGS.items() if k != "judge_sample"})
    assert load(again)["extra"]["reused_ecr_rl_run"] == str(tmp_path / rl_dir.name)
    for key, cell in rl_result["metrics"].items():
        if key.startswith(("standard/", "dedup/")):
            assert result["metrics"][key]["value"] == cell["value"], key


@pytest.mark.slow
def test_ecr_rl_pipeline(runs):
    ecr_dir, rl_dir = runs
    result = load(rl_dir)
    extra = result["extra"]
    assert extra["reused_ecr_run"] == str(ecr_dir)
    rl = extra["rl"]
    # the reward judge and the evaluation judge are different, and both passed the validity gate
    judges = rl["judges"]
    assert judges["reward"]["judge"] != judges["evaluation"]["judge"] and not judges["same_judge"]
    for role in ("reward", "evaluation"):
        validation = judges[role]["validation"]
        assert validation["ok"] and validation["aspect"] == "relevance"
        assert validation["spearman"] > validation["best_trivial_pooled_spearman"]
    assert rl["validity"]["ok"] and rl["validity"]["different_judges"]
    # no critic: the learned judge scores every completion itself
    assert "critic" not in rl and rl["rl"]["signal"] == "judge"
    log_lines = [json.loads(line) for line in (rl_dir / "checkpoints" / "rl" / "policy" / "rl_log.jsonl")
                 .read_text().splitlines()]
    assert len(log_lines) == 2
    for key in ("reward_mean", "reward_std", "kl", "loss", "completion_length", "components"):
        assert key in log_lines[0]
    assert set(log_lines[0]["components"]) == {"judge", "distinct", "rec_hit"}
    held = rl["heldout_reward"]["total"]
    assert 1 <= held["n"] <= 6 and 0 <= held["p_value"] <= 1  # one context per test dialogue (--limit 6)
    judge_keys = [k for k in result["metrics"] if k.startswith("judge/")]
    assert len(judge_keys) == 2 and all(result["metrics"][k]["n"] == 3 for k in judge_keys)
    assert all(k.startswith(f"judge/{judges['evaluation']['id']}/crsarena-turn-v1/") for k in judge_keys)
    # every reward component's spread within a prompt's completions, and its share of it
    for arm in rl["arms"].values():
        components = arm["components"]
        assert set(components) == {"judge", "distinct", "rec_hit"}
        for name, comp in components.items():
            assert comp["steps"] == 2 and 0 <= comp["steps_constant_within_groups"] <= 2
            assert (comp["steps_constant_within_groups"] == 2) == (comp["within_group_std_mean"] < 1e-9), name
            assert 0 <= comp["share_of_within_group_spread"] <= 1
    # the smoke profile's study: two seeds, each with a control whose judge weight is 0
    assert set(rl["arms"]) == {"rl", "control_s0", "rl_s1", "control_s1"}
    assert rl["arms"]["control_s0"]["weights"]["judge"] == 0 and rl["arms"]["rl"]["weights"]["judge"] == 1.0
    study = rl["study"]
    assert set(study["comparisons"]) == {"rl vs ecr", "control_s0 vs ecr", "rl_s1 vs ecr", "control_s1 vs ecr",
                                         "rl vs control_s0", "rl_s1 vs control_s1"}
    assert isinstance(study["verdict"]["improvement"], bool) and study["verdict"]["why"]
    # a third judge (trained on other data, failing the gate) scores the same replies, flagged
    (extra,) = rl["study_extra_judges"].values()
    assert extra["judge"]["judge"] == "minilm-contrast" and set(extra["comparisons"]) == set(study["comparisons"])
    assert "ok" in extra["validation"]
    judged = rl["heldout_judged"]
    assert judged["n_contexts"] == held["n"] and judged["n_judged"] + judged["n_failed"] == held["n"]
    mean = judged["length_controlled"]["mean"]
    assert {"intercept", "ci_low", "ci_high", "p_value", "slope_per_word", "length_matched"} <= set(mean)
    assert set(judged["paired"]) == set(judged["length_controlled"]) == {"relevance", "interestingness", "mean"}


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
                        "--set", "rl_stage.critic={head: ridge, surface_features: true, heldout: 0.25}",
                        "--set", "rl_stage.rewards={critic: 1.0, rec_hit: 0.25}",
                        "--set", "rl_stage.min_spearman=0.99", "--judge-sample", "3")
    assert proc.returncode == 3, proc.stderr
    assert "Stopped:" in proc.stderr and "Spearman" in proc.stderr
    assert "Traceback" not in proc.stderr
    (run_dir,) = tmp_path.glob("ecr-rl_redial_smoke_s0_n6_set-*")  # --set gives the name a digest suffix
    stopped = json.loads((run_dir / "result.json").read_text())
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
    assert rl["judges"]["reward"]["rubric_version"] == "crsarena-turn-v1"
    assert rl["rl"]["steps"] == 2 and rl["rl"]["stopped"] is None
    assert not [k for k in result["metrics"] if k.endswith("/auc") or "/rt@" in k]  # no feedback, not computed
    assert len([k for k in result["metrics"] if k.startswith("judge/")]) == 2


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


def _gate_run(run_crsbench, runs, tmp_path, site, critic_judge, eval_judge, extra=()):
    import shutil

    ecr_dir, _ = runs
    out = tmp_path / "out"
    shutil.copytree(ecr_dir, out / ecr_dir.name)  # reused, so no ECR training here
    return run_crsbench("run", "ecr-rl", "--task", "redial", "--profile", "smoke", "--limit", "6",
                        "--n-bootstrap", "20", "--no-progress", "--output-dir", out,
                        "--set", f"rl_stage.reward_judge={{name: {critic_judge}, rubric: ecr-subjective-v1}}",
                        "--set", "rl_stage.critic={head: ridge, surface_features: true, heldout: 0.25}",
                        "--set", "rl_stage.reward_metric=informativeness",
                        "--set", "rl_stage.rewards={critic: 1.0, rec_hit: 0.25}",
                        "--set", "rl_stage.require_validated_judges=false",
                        "--set", "rl_stage.min_within_accuracy=0.5", "--set", "rl_stage.critic_data.n_contexts=40",
                        *extra, "--judge", eval_judge, "--judge-sample", "3", pythonpath=[site]), \
        next(out.glob("ecr-rl_redial_smoke_s0_n6_set-*"), out / "no run directory")  # --set: a digest suffix


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
    # critic data and evaluation came from different judges, and the result says which; both
    # failed the validity gate (no validation record), which the setting overrode, recorded
    assert rl["judges"]["reward"]["model"] == "words-v1" and rl["judges"]["evaluation"]["model"] == "noise-v1"
    assert not rl["judges"]["same_judge"] and rl["study"]["key"] == "noise-v1/ecr-subjective-v1"
    assert not rl["validity"]["ok"] and "no validation record" in rl["validity"]["reward"]["why"]
    assert [k for k in load(run_dir)["metrics"] if k.startswith("judge/")][0].startswith("judge/noise-v1/")


@pytest.mark.slow
def test_the_gate_stops_an_unvalidated_reward_judge(runs, run_crsbench, tmp_path, judges_site):
    """A judge never measured against people may not drive the reward: Stopped, exit 3."""
    proc, run_dir = _gate_run(run_crsbench, runs, tmp_path, judges_site, "words", "noise",
                              extra=("--set", "rl_stage.require_validated_judges=true"))
    assert proc.returncode == 3, proc.stderr
    assert "Stopped:" in proc.stderr and "fails the validity gate" in proc.stderr
    assert "no validation record" in proc.stderr and "Traceback" not in proc.stderr
    stopped = json.loads((run_dir / "result.json").read_text())
    assert "validity gate" in stopped["extra"]["stopped"] and stopped["metrics"] == {}


@pytest.mark.slow
def test_the_evaluation_judge_must_differ_from_the_reward_judge(runs, run_crsbench, tmp_path):
    ecr_dir, _ = runs
    out = tmp_path / "out"
    import shutil

    shutil.copytree(ecr_dir, out / ecr_dir.name)
    proc = run_crsbench("run", "ecr-rl", "--task", "redial", "--profile", "smoke", "--limit", "6",
                        "--n-bootstrap", "20", "--no-progress", "--output-dir", out,
                        "--set", "rl_stage.eval_judge={name: minilm-human-a, rubric: crsarena-turn-v1}")
    assert proc.returncode == 3, proc.stderr
    assert "the evaluation judge is the reward judge" in proc.stderr and "Traceback" not in proc.stderr
