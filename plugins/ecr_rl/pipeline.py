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
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch


log = logging.getLogger("crsbench")

CONSTANT_WITHIN_GROUPS = 1e-9  # a component whose within-group std stays below this carries no signal


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


# -- replies ----------------------------------------------------------------------------------
def generator_requests(state, samples, n: int, seed: int, salt: int, one_per_dialog: bool = False,
                       placeholder: str | None = None):
    """Up to ``n`` seeded samples whose ECR template recommends a movie (the replies ECR's
    stage-3 generator writes), with their ``(items, filled template)`` requests; with
    ``one_per_dialog``, from ``n`` different dialogues. With ``placeholder`` (training
    contexts only), a context whose generated template names no movie falls back to its
    reference template (the task's ``response_template``, as stage 3 trains on), so that a
    weak conversation model still leaves contexts to learn from; the second return value
    counts those."""
    from crsbench_plugins.ecr.pipeline import reply_requests, with_slot_token

    order = np.random.default_rng([seed, salt]).permutation(len(samples))
    chosen, dialogs = [], set()
    for start in range(0, len(order), max(64, n)):
        chunk = order[start:start + max(64, n)].tolist()
        batch = [samples[i] for i in chunk]
        found = reply_requests(state, batch)
        if placeholder is not None:
            refs = [s["response_template"] for s in with_slot_token(batch, placeholder)]
            for j, ref in enumerate(reply_requests(state, batch, templates=refs)):
                if not found[j][1] and ref[1]:
                    found[j] = (ref[0], ref[1], "reference template")
        for k, request in zip(chunk, found):
            if request[1] and not (one_per_dialog and samples[k]["dialog_id"] in dialogs):
                chosen.append((k, request))
                dialogs.add(samples[k]["dialog_id"])
        if len(chosen) >= n:
            break
    chosen = sorted(chosen[:n])
    requests = [(r[1], r[0]) for _, r in chosen]
    n_reference = sum(len(r) == 3 for _, r in chosen)
    return [samples[k] for k, _ in chosen], requests, n_reference


def sample_descriptions(model, tokenizer, prompts, n: int, temperature: float, top_p: float,
                        max_new_tokens: int, seed: int) -> list[list[str]]:
    """``n`` sampled continuations per prompt (diverse generator outputs for the judge)."""
    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    out = []
    for start in range(0, len(prompts), 16):
        chunk = prompts[start:start + 16]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                        max_length=model.config.n_positions - max_new_tokens
                        if hasattr(model.config, "n_positions") else 512).to(next(model.parameters()).device)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=temperature, top_p=top_p,
                                 max_new_tokens=max_new_tokens, num_return_sequences=n,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        out += [[" ".join(t.split()) for t in texts[k * n:(k + 1) * n]] for k in range(len(chunk))]
    return out


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


def arm_name(arm: str, seed: int, seeds: list[int]) -> str:
    """``rl`` (the first seed's judge-rewarded policy, the one the run predicts with),
    ``rl_s<seed>`` for the other seeds, ``control_s<seed>`` for the controls."""
    if arm == "rl" and seed == seeds[0]:
        return "rl"
    return f"{arm}_s{seed}"


def fit_critic(state, cfg, judge, train_rec, placeholder, out_dir, context, timings):
    """Judge data (ground truth + sampled replies of ECR's generator per training context),
    then a critic trained on it with contexts split and gated (``check_critic``)."""
    from crsbench.errors import DegenerateRunError
    from crsbench.judge import JudgeInput
    from crsbench_plugins.ecr_rl.critic import check_critic, train_critic

    describer, rcfg = state.describer, cfg["rl_stage"]
    t0 = time.perf_counter()
    dcfg = rcfg["critic_data"]
    judged_samples, requests, n_ref = generator_requests(state, train_rec, dcfg["n_contexts"], context.seed, 1,
                                                         placeholder=placeholder)
    if not judged_samples:
        raise DegenerateRunError("no training context where ECR's template recommends a movie: its stage-3 "
                                 "generator writes no reply that RL could train")
    prompts = [describer.prompt(r) for r in requests]
    sampled = sample_descriptions(describer.model, describer.tokenizer, prompts, dcfg["samples_per_context"],
                                  dcfg["temperature"], dcfg["top_p"], cfg["responses"]["max_new_tokens"], context.seed)
    pairs, kinds, groups = [], [], []
    for s, replies_ in zip(judged_samples, sampled):
        for kind, reply in [("ground_truth", s["response"])] + [("ecr_sample", r) for r in replies_]:
            pairs.append((list(s["context"]), reply, list(s.get("context_roles") or []) or None))
            kinds.append(kind)
            groups.append(s["sample_id"])
    scores = judge.score([JudgeInput(c, r, roles) for c, r, roles in pairs])
    ok = [k for k, sc in enumerate(scores) if sc.ok]
    judge_report = dict(judge.describe(), role="critic data", n_pairs=len(pairs), n_failed=len(pairs) - len(ok),
                        n_contexts=len(judged_samples), n_contexts_reference_template=n_ref, stats=judge.stats(),
                        mean_by_kind={kind: float(np.mean([np.mean(list(scores[k].scores.values()))
                                                           for k in ok if kinds[k] == kind] or [np.nan]))
                                      for kind in ("ground_truth", "ecr_sample")})
    timings["judge_data"] = time.perf_counter() - t0
    with open(out_dir / "critic_data.jsonl", "w", encoding="utf-8") as fh:
        for (ctx, resp, _), kind, group, sc in zip(pairs, kinds, groups, scores):
            fh.write(json.dumps({"context_id": group, "context": ctx, "response": resp, "kind": kind,
                                 "scores": sc.scores if sc.ok else None}) + "\n")
    t0 = time.perf_counter()
    critic_cfg = {**rcfg["critic"], "metrics": rcfg["critic"].get("metrics") or list(judge.metrics)}
    critic_report = train_critic([pairs[k][:2] for k in ok], [scores[k].scores for k in ok], critic_cfg,
                                 out_dir / "critic", seed=context.seed, encoder=state.encoder.encoder,
                                 groups=[groups[k] for k in ok], kinds=[kinds[k] for k in ok])
    timings["critic"] = time.perf_counter() - t0
    (out_dir / "critic_report.json").write_text(json.dumps({k: v for k, v in critic_report.items() if k != "config"},
                                                           indent=2))
    check_critic(critic_report, rcfg["min_spearman"], min_within_accuracy=rcfg["min_within_accuracy"])
    return critic_report, judge_report


class ComponentVariance:
    """Per RL step: each reward component's within-group std (groups = completions of one
    prompt). The step's total leaves out components constant within every group (they shift
    a group's rewards together, so they cannot rank siblings), warning once per component."""

    def __init__(self, weights: dict[str, float]):
        self.weights = dict(weights)
        self.steps: list[dict] = []
        self.warned: set[str] = set()

    def total(self, prompts, components: dict[str, np.ndarray]) -> np.ndarray:
        index: dict[str, int] = {}
        keys = np.array([index.setdefault(p, len(index)) for p in prompts])
        step = {}
        total = np.zeros(len(prompts))
        for name, values in components.items():
            values = np.asarray(values, float)
            within = float(np.mean([values[keys == k].std() for k in np.unique(keys)]))
            between = float(values.std())
            constant = within < CONSTANT_WITHIN_GROUPS
            step[name] = {"within_group_std": within, "batch_std": between, "used": not constant}
            if constant:
                if name not in self.warned:
                    self.warned.add(name)
                    log.warning("rl: reward component %r is constant within every group (batch std %.3g); "
                                "it is left out of the total while it stays so", name, between)
            else:
                total += self.weights[name] * values
        # each component's share of the weighted within-group spread: what can rank siblings
        spread = {n: abs(self.weights[n]) * v["within_group_std"] for n, v in step.items() if v["used"]}
        for n, v in step.items():
            v["share"] = spread[n] / sum(spread.values()) if n in spread and sum(spread.values()) > 0 else 0.0
        self.steps.append(step)
        return total

    def report(self) -> dict:
        names = sorted({n for s in self.steps for n in s})
        return {n: {"within_group_std_mean": float(np.mean([s[n]["within_group_std"] for s in self.steps if n in s])),
                    "batch_std_mean": float(np.mean([s[n]["batch_std"] for s in self.steps if n in s])),
                    "steps_constant_within_groups": int(sum(not s[n]["used"] for s in self.steps if n in s)),
                    "share_of_within_group_spread": float(np.mean([s[n]["share"] for s in self.steps if n in s])),
                    "steps": int(sum(n in s for s in self.steps)), "weight": self.weights.get(n)}
                for n in names}


def judge_replies(judge, held: list[dict], replies: list[str], desc: str, progress: bool = False) -> list:
    """The judge's scores of ``replies`` in the contexts of ``held`` (one per context)."""
    from tqdm.auto import tqdm

    from crsbench.judge import JudgeInput

    items = [JudgeInput(list(s["context"]), r, list(s.get("context_roles") or []) or None)
             for s, r in zip(held, replies)]
    scores = []
    bar = tqdm(total=len(items), desc=f"judge {desc}", unit="reply", disable=not progress)
    for start in range(0, len(items), 64):
        scores += judge.score(items[start:start + 64])
        bar.update(len(items[start:start + 64]))
    bar.close()
    return scores


def compare_scored(metrics: list[str], held: list[dict], replies_a: list[str], replies_b: list[str],
                   scores_a: list, scores_b: list, seed: int) -> dict:
    """B vs A on the same contexts: per metric (and their mean) the paired difference with a
    dialogue-bootstrap CI, the length difference, and the length-controlled difference (the
    intercept of the paired difference regressed on the word-count difference)."""
    both = [k for k in range(len(held)) if scores_a[k].ok and scores_b[k].ok]
    dialogs = [held[k]["dialog_id"] for k in both]
    values = {}
    for m in list(metrics) + ["mean"]:
        def get(sc):
            return float(np.mean([sc.scores[x] for x in metrics])) if m == "mean" else float(sc.scores[m])
        values[m] = (np.array([get(scores_a[k]) for k in both]), np.array([get(scores_b[k]) for k in both]))
    words_a = np.array([len(replies_a[k].split()) for k in both], float)
    words_b = np.array([len(replies_b[k].split()) for k in both], float)
    return {"n_contexts": len(held), "n_judged": len(both), "n_failed": len(held) - len(both), "seed": seed,
            "paired": paired_comparison(dialogs, values, seed=seed) if both else {},
            "length_words": paired_comparison(dialogs, {"words": (words_a, words_b)}, seed=seed)["words"]
            if both else {},
            "length_controlled": {m: length_controlled_delta(dialogs, b - a, words_b - words_a, seed)
                                  for m, (a, b) in values.items()} if both else {}}


def study_comparison(judge, held: list[dict], replies: dict[str, list[str]], seeds: list[int], arms: list[str],
                     primary: str, seed: int, progress: bool = False) -> dict:
    """Every policy's replies (``rl``, ``rl_s<k>``, ``control_s<k>``) against ECR's, and each
    seed's RL policy against its control, judged by the evaluation judge on the same held-out
    contexts. ``verdict``: an improvement is claimed only when, for every seed, the RL policy
    beats both ECR and its control on ``primary`` with the paired CI and the length-controlled
    CI all above 0 (a control that got worse than ECR alone does not make RL an improvement)."""
    metrics = list(judge.metrics)
    scores = {name: judge_replies(judge, held, r, name, progress) for name, r in replies.items()}
    comparisons = {}
    for name in replies:
        if name != "ecr":
            comparisons[f"{name} vs ecr"] = compare_scored(metrics, held, replies["ecr"], replies[name],
                                                           scores["ecr"], scores[name], seed)
    controlled = []
    if "control" in arms:
        for s in seeds:
            a, b = arm_name("control", s, seeds), arm_name("rl", s, seeds)
            key = f"{b} vs {a}"
            comparisons[key] = compare_scored(metrics, held, replies[a], replies[b], scores[a], scores[b], seed)
            controlled += [key, f"{b} vs ecr"]
    def value(sc):  # the primary metric, or the mean of the judge's metrics when it has no such one
        return sc.scores[primary] if primary in sc.scores else float(np.mean(list(sc.scores.values())))
    means = {name: float(np.mean([value(sc) for sc in s if sc.ok])) if any(sc.ok for sc in s) else None
             for name, s in scores.items()}
    lengths = {name: float(np.mean([len(r.split()) for r in rs])) for name, rs in replies.items()}
    if not controlled:
        verdict = {"improvement": False, "why": "no control run (rl_stage.study.control is off)"}
    elif primary not in metrics:
        verdict = {"improvement": False, "why": f"the evaluation judge does not score {primary!r}"}
    else:
        checks = {key: {"paired_ci_low": comparisons[key]["paired"].get(primary, {}).get("ci_low"),
                        "length_controlled_ci_low": comparisons[key]["length_controlled"].get(primary, {})
                        .get("ci_low")} for key in controlled}
        ok = all(v is not None and v > 0 for c in checks.values() for v in c.values())
        verdict = {"improvement": ok, "metric": primary, "checks": checks,
                   "why": "every seed beats ECR and its control, raw and at equal length" if ok else
                   "not every seed beats both ECR and its control with both CIs above 0"}
    return {"judge": judge.describe(), "key": judge.key, "primary_metric": primary, "n_contexts": len(held),
            "mean_score": means, "mean_words": lengths, "comparisons": comparisons, "verdict": verdict,
            "stats": judge.stats()}


def length_controlled_delta(dialogs: list[str], delta: np.ndarray, length_delta: np.ndarray, seed: int,
                            n_boot: int = 1000, matched_words: int = 2) -> dict:
    """``delta = a + b * length_delta`` by least squares: ``a`` is the judge difference at equal
    length, with a dialogue-bootstrap 95% CI and p-value; also the mean delta over the pairs
    whose lengths differ by at most ``matched_words`` words (a length-matched comparison)."""
    from crsbench.bootstrap import draw_dialog_counts, paired_p_value, percentile_ci

    delta, length_delta = np.asarray(delta, float), np.asarray(length_delta, float)
    index = {d: i for i, d in enumerate(sorted(set(dialogs)))}
    counts = draw_dialog_counts(len(index), n_boot, seed)[:, np.array([index[d] for d in dialogs])]

    def fit(w):
        x = np.column_stack([np.ones_like(length_delta), length_delta])
        if np.ptp(length_delta[w > 0]) == 0:  # no length variation: the mean is the intercept
            return float(np.average(delta, weights=w)), 0.0
        coef, *_ = np.linalg.lstsq(x * np.sqrt(w)[:, None], delta * np.sqrt(w), rcond=None)
        return float(coef[0]), float(coef[1])

    a, b = fit(np.ones_like(delta))
    draws = np.array([fit(c.astype(float)) for c in counts])
    lo, hi = percentile_ci(draws[:, 0])
    slo, shi = percentile_ci(draws[:, 1])
    matched = np.abs(length_delta) <= matched_words
    return {"intercept": a, "ci_low": lo, "ci_high": hi, "p_value": paired_p_value(draws[:, 0]),
            "slope_per_word": b, "slope_ci_low": slo, "slope_ci_high": shi, "n": int(len(delta)),
            "length_matched": {"max_word_difference": matched_words, "n": int(matched.sum()),
                               "delta": float(delta[matched].mean()) if matched.any() else None}}


def paired_comparison(dialogs: list[str], values: dict[str, tuple], seed: int, n_boot: int = 1000) -> dict:
    """Mean of A and B, B - A with a 95% CI and a paired dialogue-bootstrap p-value, per component."""
    from crsbench.bootstrap import draw_dialog_counts, paired_p_value, percentile_ci

    if not dialogs:  # e.g. no held-out template recommends a movie (tiny test models)
        return {}
    index = {d: i for i, d in enumerate(sorted(set(dialogs)))}
    unit = np.array([index[d] for d in dialogs], dtype=int)
    counts = draw_dialog_counts(len(index), n_boot, seed)[:, unit]
    out = {}
    for name, (a, b) in values.items():
        a, b = np.asarray(a, float), np.asarray(b, float)
        deltas = (counts * (b - a)).sum(1) / counts.sum(1)
        lo, hi = percentile_ci(deltas)
        out[name] = {"ecr": float(a.mean()), "ecr_rl": float(b.mean()), "delta": float((b - a).mean()),
                     "ci_low": lo, "ci_high": hi, "p_value": paired_p_value(deltas), "n": len(a)}
    return out
