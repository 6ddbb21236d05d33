"""The ECR plugin end to end on real ReDial data, with the ``smoke`` profile.

- a run trains every stage, writes per-stage checkpoints and loss curves, reports every
  recommendation and generation metric;
- a run that crashes after stage 1 and is restarted in the same directory resumes from the
  stored stage and ends with the same metrics as an uninterrupted run (same seed), which
  also shows two runs with one seed give identical metrics on the CPU;
- ``unicrs`` is the same pipeline with the emotion components off;
- the ``paper`` profile's code path runs with tiny random-weight models of the paper's
  architectures (GPT-2 = DialoGPT's, RoBERTa) built locally.
"""
from __future__ import annotations

import json

import pytest

from crsbench.runner import run

ARGS = dict(task_name="redial", profile="smoke", limit=6, n_bootstrap=20, progress=False)


def metrics_of(run_dir):
    result = json.loads((run_dir / "result.json").read_text())
    return {k: v["value"] for k, v in result["metrics"].items()}, result


@pytest.fixture(scope="module")
def ecr_run(tmp_path_factory):
    return run("ecr", output_dir=tmp_path_factory.mktemp("a"), **ARGS)


@pytest.mark.slow
def test_ecr_smoke_run_trains_every_stage(ecr_run):
    metrics, result = metrics_of(ecr_run)
    stages = result["extra"]["stages"]
    for stage in ("emotion", "stage1_pretrain", "templates", "stage2_recommendation", "stage3_responses"):
        assert stage in stages, stage
    for sub in ("stage1_pretrain", "stage2_recommendation", "templates", "responses"):
        assert (ecr_run / "checkpoints" / sub / "loss.png").stat().st_size > 1000
    assert result["extra"]["switches"] == {"local_emotion": True, "global_entities": True,
                                           "feedback_weighting": True}
    # the process's peak memory at the end of each timed stage (a value covers earlier stages too)
    peaks = result["extra"]["stage_peak_rss_mb"]
    assert {"emotion_labels", "stage1_pretrain", "templates", "stage2_recommendation", "stage3_responses"} <= \
        set(peaks) <= set(result["extra"]["stage_seconds"])
    assert all(50 < v <= result["peak_memory_mb"] + 1 for v in peaks.values()), peaks
    assert peaks["stage3_responses"] >= peaks["stage1_pretrain"]  # stage 3 ends after stage 1
    for key in ("standard/recall@10", "dedup/recall@10", "standard/rt@10", "standard/auc",
                "generation/bleu-2", "generation/dist-2", "generation/distinct_ratio-2", "generation/rouge-l",
                "generation/item_ratio"):
        assert key in metrics, key
    lines = [json.loads(line) for line in (ecr_run / "predictions.jsonl").read_text().splitlines()]
    assert all(isinstance(r["response"], str) for r in lines)
    assert metrics["generation/mean_length"] > 0


def test_fill_template_uses_recommended_titles_in_order():
    from crsbench_plugins.ecr.pipeline import fill_template

    text, used = fill_template("you should watch <movie> or <movie> !", ["Heat (1995)", "Up (2009)"])
    assert text == "you should watch Heat (1995) or Up (2009) !" and used == ["Heat (1995)", "Up (2009)"]
    assert fill_template("hello there", ["Heat (1995)"]) == ("hello there", [])
    # more slots than titles: the last title is repeated rather than leaving a slot
    assert fill_template("<movie> and <movie>", ["Heat (1995)"])[0] == "Heat (1995) and Heat (1995)"


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_metrics(ecr_run, tmp_path, monkeypatch):
    from crsbench_plugins.ecr import templates

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash after stage 1")

    with monkeypatch.context() as patch:
        patch.setattr(templates.TemplateGenerator, "fit", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run("ecr", output_dir=tmp_path, **ARGS)
    run_dir = tmp_path / ecr_run.name
    assert (run_dir / "checkpoints" / "stage1_pretrain" / "done.json").exists()
    assert not (run_dir / "result.json").exists()

    resumed = run("ecr", output_dir=tmp_path, **ARGS)
    assert "stage1: already trained" in (resumed / "log.txt").read_text()
    assert metrics_of(resumed)[0] == metrics_of(ecr_run)[0]


@pytest.mark.slow
def test_unicrs_turns_emotions_off(tmp_path):
    run_dir = run("unicrs", output_dir=tmp_path, **ARGS)
    metrics, result = metrics_of(run_dir)
    assert result["extra"]["switches"] == {"local_emotion": False, "global_entities": False,
                                           "feedback_weighting": False}
    assert "emotion" not in result["extra"]["stages"]
    assert "stage3_responses" not in result["extra"]["stages"]
    assert "generation/bleu-1" in metrics


def tiny_backbones(root):
    from crsbench_plugins.ecr.tiny_models import write_tiny_backbones

    return write_tiny_backbones(root)


PAPER_OVERRIDES = ("max_train_samples=150", "stage1.epochs=1", "stage2.epochs=1", "templates.epochs=1",
                   "templates.max_train=100", "templates.max_new_tokens=6", "responses.epochs=1",
                   "responses.max_new_tokens=6", "emotion.classifier_train=200", "emotion.classifier_epochs=2")


# ECR-RL at paper shapes' code path: the transformers judge is the tiny GPT-2 too; the gate
# is off because a random-weight judge gives the critic nothing to learn (its own tests cover it).
PAPER_RL_OVERRIDES = ("rl_stage.critic_data.n_contexts=8", "rl_stage.rl.n_prompts=8", "rl_stage.rl.steps=2",
                      "rl_stage.rl.batch_size=4", "rl_stage.rl.num_generations=2", "rl_stage.rl.max_new_tokens=6",
                      "rl_stage.heldout.n_contexts=6", "rl_stage.min_spearman=-1", "rl_stage.min_within_accuracy=null")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ecr", "unicrs", "ecr-rl"])
def test_paper_profile_code_path_with_tiny_local_models(model, tmp_path):
    from crsbench.devices import check_devices

    gpt_dir, roberta_dir = tiny_backbones(tmp_path)
    overrides = (f"lm.backbone={gpt_dir}", "generator.backbone=lm", f"text_encoder={roberta_dir}",
                 *PAPER_OVERRIDES)
    if model == "ecr-rl":
        # the critic path (an LLM judge too slow for the RL loop); a random-weight judge has no
        # validation record, so the validity gate is overridden (its own tests cover it)
        overrides += (f"rl_stage.reward_judge={{name: transformers, model: {gpt_dir}, rubric: ecr-subjective-v1}}",
                      "rl_stage.reward_metric=informativeness", "rl_stage.require_validated_judges=false",
                      "rl_stage.critic={head: ridge, surface_features: true, heldout: 0.25}",
                      "rl_stage.rewards={critic: 1.0, rec_hit: 0.25}", "rl_stage.prompts=generated_or_reference",
                      *PAPER_RL_OVERRIDES)
    with check_devices() as devices:  # every module call gets its inputs on its own device
        run_dir = run(model, task_name="redial", profile="paper", limit=4, n_bootstrap=10, progress=False,
                      output_dir=tmp_path / "runs", overrides=overrides)
    assert devices == {"cpu"}
    metrics, result = metrics_of(run_dir)
    assert result["model"]["profile"] == "paper"
    assert result["model"]["config"]["lm"]["backbone"] == str(gpt_dir)
    assert result["model"]["config"]["stage2"]["lr"] == 1e-4  # the paper's hyperparameters stay
    assert result["model"]["config"]["stage2"]["warmup"] == (0.2 if model == "unicrs" else 0.4)  # official warm-ups as fractions
    lm = result["extra"]["stages"]["lm"]
    assert lm["backbone"] == str(gpt_dir) and lm["trained"] is False  # a given LM is used frozen as it is
    assert "standard/recall@50" in metrics and "generation/bleu-1" in metrics
    if model in ("ecr", "ecr-rl"):
        assert "stage3_responses" in result["extra"]["stages"]
    if model == "ecr-rl":
        rl = result["extra"]["rl"]
        assert str(roberta_dir) in rl["critic"]["encoder"]  # the critic embeds with the profile's encoder
        assert rl["judges"]["reward"]["judge"] == "transformers"
        assert rl["judges"]["reward"]["model"].startswith("dialogpt-tiny@")
        assert rl["critic"]["n_pairs"] > 0 and rl["rl"]["steps"] == 2 and rl["rl"]["stopped"] is None
