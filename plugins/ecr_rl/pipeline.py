"""ECR-RL after ECR: judge -> critic (validated) -> rewards -> policy optimisation -> held-out check.

1. Judge data: for a seeded sample of training contexts whose ECR template recommends a
   movie, the ground-truth reply and a few sampled replies of ECR's stage-3 generator (it
   writes the whole reply) are scored by the critic-data judge (``rl_stage.judge``).
2. Critic: trained on those scores with contexts split, never pairs; its held-out Spearman
   across contexts and its within-context pairwise accuracy gate RL.
3. Rewards: the configured weighted sum of reward plugins; every component's within-group
   spread is logged, and a component constant within every group of a step is left out of
   that step's total (it cannot change a group-relative advantage) with a warning.
4. Policy optimisation: TRL on the stage-3 generator, KL-penalised towards ECR's.
5. Held-out: on seeded test contexts, ECR's and ECR-RL's replies get the same reward and
   (one context per dialogue) are scored by the evaluation judge (the run's ``--judge``,
   else ``rl_stage.judge``):
   paired differences with dialogue-bootstrap CIs, and a length-controlled judge difference
   (the intercept of the paired judge difference regressed on the length difference).
Recommendation is untouched: only the stage-3 generator changes.

The stage is split by job: replies.py (contexts and sampled replies of ECR's generator),
critic_stage.py (steps 1-2), reward_variance.py (step 3's per-step bookkeeping), study.py
(step 5's judged comparison) and paired_stats.py (its paired statistics); this module runs
the stage and reuses a finished ECR run's checkpoints.
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from pathlib import Path

from crsbench_plugins.ecr_rl.critic_stage import fit_critic
from crsbench_plugins.ecr_rl.paired_stats import paired_comparison
from crsbench_plugins.ecr_rl.replies import generator_requests
from crsbench_plugins.ecr_rl.reward_variance import ComponentVariance
from crsbench_plugins.ecr_rl.study import arm_name, study_comparison

log = logging.getLogger("crsbench")


# -- reusing a finished ECR run -----------------------------------------------------------------
def ecr_config(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "rl_stage"}


def reuse_ecr_checkpoints(cfg: dict, context) -> str | None:
    """Copy the stage checkpoints of a matching ``crsbench run ecr`` next to this run, if any."""
    mine = Path(context.checkpoint_dir)
    if (mine / "stage2_recommendation" / "done.json").exists() or not cfg["rl_stage"].get("reuse_ecr"):
        return None
    from crsbench.runs import twin_run  # an ECR run with this ECR config, task and data (any --set digest)

    wanted = json.loads(json.dumps(ecr_config(cfg)))  # as config.json stores it (tuples are lists)
    other = twin_run(context.run_dir, "ecr-rl", "ecr",
                     lambda c: c.get("model_config") == wanted and c.get("seed") == context.seed)
    if other is None:
        log.info("not reusing an ECR run: none beside this one has its ECR configuration, task and data")
        return None
    if not (other / "checkpoints" / "stage2_recommendation" / "done.json").exists():
        return None
    shutil.copytree(other / "checkpoints", mine, dirs_exist_ok=True)
    log.info("reusing ECR checkpoints of %s", other)
    return str(other)


# -- the stage ----------------------------------------------------------------------------------
def train_rl(state, cfg: dict, data, context) -> dict:
    from crsbench.errors import UserError
    from crsbench_plugins.ecr_rl.policy import rl_finetune
    from crsbench.judge_eval import make_judge
    from crsbench_plugins.ecr_rl.validity import check_judges, judge_validity
    from crsbench_plugins.rewards.combined import CombinedReward

    rcfg = cfg["rl_stage"]
    if state.describer is None:
        raise UserError("ecr-rl needs ECR's stage-3 generator: set emotion_response=true")
    out_dir = Path(context.checkpoint_dir) / "rl"
    out_dir.mkdir(parents=True, exist_ok=True)
    report, timings = {}, {}
    describer = state.describer
    reference = copy.deepcopy(describer.model).eval()
    train_rec = [s for s in data.splits["train"] if s["targets"]]
    rubric = getattr(data, "default_rubric", None)

    # 0. the instruments: a validated reward judge and a different, validated evaluation judge
    reward_spec = judge_spec(rcfg["reward_judge"], rubric)
    eval_spec = judge_spec(dict(context.judge) if getattr(context, "judge", None) else rcfg["eval_judge"], rubric)
    reward_judge, eval_judge, report["validity"] = check_judges(
        reward_spec, eval_spec, rcfg["reward_metric"], required=rcfg["require_validated_judges"])
    placeholder = (getattr(data, "item_placeholder", None) or "<item>") \
        if rcfg.get("prompts") == "generated_or_reference" else None

    # 1-2. for a judge too slow for the RL loop: a critic of its scores, validated first
    signal_options = {"metric": rcfg["reward_metric"], "judge": reward_spec}
    if rcfg.get("critic"):
        critic_report, report["judge"] = fit_critic(state, cfg, reward_judge, train_rec, placeholder,
                                                    out_dir, context, timings)
        report["critic"] = {k: v for k, v in critic_report.items() if k != "config"}
        signal, signal_options = "critic", {"critic": critic_report.critic}
    else:
        signal = "judge"
    rewards = dict(rcfg["rewards"])
    if signal not in rewards:
        raise UserError(f"rl_stage.rewards has no {signal!r} weight: the validated signal must be part of the reward")
    options = {signal: signal_options, "rec_hit": {"item_names": state.item_names}}

    def reward_inputs(samples, reqs):
        # rec_hit asks for the movies ECR recommends, i.e. those its template names
        return [dict(s, targets=list(items)) for s, (items, _) in zip(samples, reqs)]

    # 3-4. policy optimisation of the stage-3 generator, on prompts built as at evaluation;
    # per seed, the judge-rewarded arm and (study.control) the same RL with the signal's weight at 0
    t0 = time.perf_counter()
    rl_samples, rl_requests, n_ref = generator_requests(state, train_rec, rcfg["rl"]["n_prompts"], context.seed, 2,
                                                        placeholder=placeholder)
    if len(rl_samples) < rcfg["rl"]["batch_size"]:
        from crsbench.errors import DegenerateRunError

        raise DegenerateRunError(f"only {len(rl_samples)} training contexts where ECR's generated template "
                                 f"recommends a movie: too few RL prompts (batch size {rcfg['rl']['batch_size']})")
    rl_prompts = [describer.prompt(r) for r in rl_requests]
    by_prompt = {p: (s, r) for p, s, r in zip(rl_prompts, rl_samples, rl_requests)}
    study = dict(rcfg.get("study") or {})
    seeds = [int(s) for s in study.get("seeds") or [0]]
    arms = ["rl"] + (["control"] if study.get("control") else [])
    policies, report["arms"] = {}, {}
    for seed in seeds:
        for arm in arms:
            weights = dict(rewards, **({signal: 0.0} if arm == "control" else {}))
            reward = CombinedReward(weights, options=options)
            variance = ComponentVariance(reward.weights)

            def reward_fn(prompts, completions, reward=reward, variance=variance):
                found = [by_prompt[p] for p in prompts]
                samples = reward_inputs([s for s, _ in found], [r for _, r in found])
                _, components = reward.score_components(samples, [" ".join(c.split()) for c in completions])
                total = variance.total(prompts, components)
                return total.tolist(), {k: v.tolist() for k, v in components.items()}

            name = arm_name(arm, seed, seeds)
            rl_cfg = dict(rcfg["rl"], seed=context.seed * 1000 + seed)
            arm_dir = out_dir if name == "rl" else out_dir / name
            result = rl_finetune(reference, describer.tokenizer, rl_prompts, reward_fn, rl_cfg, arm_dir / "policy",
                                 progress=context.progress)
            policies[name] = result.pop("model").eval()
            result["components"] = variance.report()
            result["weights"] = weights
            report["arms"][name] = result
    report["rl"] = dict(report["arms"]["rl"], n_prompts=len(rl_prompts), n_prompts_reference_template=n_ref,
                        signal=signal, seeds=seeds, arms=arms)
    describer.model = policies["rl"]
    timings["rl"] = time.perf_counter() - t0

    # 5. held-out test contexts (one per dialogue, generated templates as at inference):
    # ECR's replies vs every arm's, by the reward and by the (different) evaluation judge
    t0 = time.perf_counter()
    test_rec = [s for s in data.splits["test"] if s["targets"]]
    held, held_req, _ = generator_requests(state, test_rec, rcfg["heldout"]["n_contexts"], context.seed, 3,
                                           one_per_dialog=True)
    replies = {"ecr": [" ".join(t.split()) for t in describer.generate(held_req, model=reference)]}
    for name, policy in policies.items():
        replies[name] = [" ".join(t.split()) for t in describer.generate(held_req, model=policy)]
    reward = CombinedReward(rewards, options=options)
    scored = {name: reward.score_components(reward_inputs(held, held_req), r) for name, r in replies.items()}
    dialogs = [s["dialog_id"] for s in held]
    tot_ecr, comp_ecr = scored["ecr"]
    tot_rl, comp_rl = scored["rl"]
    report["heldout_reward"] = paired_comparison(
        dialogs, {"total": (tot_ecr, tot_rl), **{k: (comp_ecr[k], comp_rl[k]) for k in comp_ecr}}, seed=context.seed)
    timings["heldout_reward"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    report["study"] = study_comparison(eval_judge, held, replies, seeds, arms, rcfg["reward_metric"], context.seed,
                                       progress=context.progress)
    report["heldout_judged"] = report["study"]["comparisons"]["rl vs ecr"]
    report["study_extra_judges"] = {}
    for spec in rcfg.get("extra_eval_judges") or []:
        extra_judge = make_judge(judge_spec(spec, rubric))
        study = study_comparison(extra_judge, held, replies, seeds, arms, rcfg["reward_metric"], context.seed,
                                 progress=context.progress)
        report["study_extra_judges"][extra_judge.key] = dict(
            study, validation=judge_validity(extra_judge, rcfg["reward_metric"]))
    report["judges"] = {"reward": dict(reward_judge.describe(), spec=reward_spec, metric=rcfg["reward_metric"],
                                       validation=report["validity"]["reward"]),
                        "evaluation": dict(eval_judge.describe(), spec=eval_spec,
                                           source="--judge" if getattr(context, "judge", None) else "rl_stage.eval_judge",
                                           validation=report["validity"]["evaluation"]),
                        "same_judge": eval_judge.judge_id == reward_judge.judge_id}
    report["heldout_examples"] = [{"sample_id": s["sample_id"], **{k: v[i] for k, v in replies.items()}}
                                  for i, s in enumerate(held[:5])]
    timings["heldout_judged"] = time.perf_counter() - t0
    report["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    return report


def judge_spec(spec, rubric: str | None) -> dict:
    """``{"name": ..., **options}`` with the task's default rubric unless the spec names one."""
    spec = dict(spec) if isinstance(spec, dict) else {"name": spec}
    return {"rubric": rubric, **spec} if rubric else spec
