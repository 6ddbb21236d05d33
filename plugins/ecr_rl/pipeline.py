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

from crsbench.runs import CONFIG_FILE

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
    name = context.run_dir.name.replace("ecr-rl_", "ecr_", 1)
    other = context.run_dir.parent / name
    try:
        config = json.loads((other / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    if config.get("model_config") != ecr_config(cfg) or config.get("seed") != context.seed:
        log.info("not reusing %s: its ECR configuration differs", other)
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
    from crsbench.judge import JudgeInput
    from crsbench.judge_eval import make_judge
    from crsbench_plugins.ecr_rl.critic import check_critic, train_critic
    from crsbench_plugins.ecr_rl.policy import rl_finetune
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
    max_new = cfg["responses"]["max_new_tokens"]

    # 1. judge data: ground truth + sampled replies of ECR's generator, one group per context
    t0 = time.perf_counter()
    dcfg = rcfg["critic_data"]
    placeholder = getattr(data, "item_placeholder", None) or "<item>"
    judged_samples, requests, n_ref = generator_requests(state, train_rec, dcfg["n_contexts"], context.seed, 1,
                                                         placeholder=placeholder)
    if not judged_samples:
        from crsbench.errors import DegenerateRunError

        raise DegenerateRunError("no training context where ECR's template recommends a movie: its stage-3 "
                                 "generator writes no reply that RL could train")
    prompts = [describer.prompt(r) for r in requests]
    sampled = sample_descriptions(describer.model, describer.tokenizer, prompts, dcfg["samples_per_context"],
                                  dcfg["temperature"], dcfg["top_p"], max_new, context.seed)
    pairs, kinds, groups = [], [], []
    for s, replies_ in zip(judged_samples, sampled):
        for kind, reply in [("ground_truth", s["response"])] + [("ecr_sample", r) for r in replies_]:
            pairs.append((list(s["context"]), reply, list(s.get("context_roles") or []) or None))
            kinds.append(kind)
            groups.append(s["sample_id"])
    # the task's default rubric unless the judge spec names one
    judge = make_judge({"rubric": getattr(data, "default_rubric", None), **rcfg["judge"]})
    scores = judge.score([JudgeInput(c, r, roles) for c, r, roles in pairs])
    ok = [k for k, sc in enumerate(scores) if sc.ok]
    report["judge"] = dict(judge.describe(), role="critic data", n_pairs=len(pairs), n_failed=len(pairs) - len(ok),
                           n_contexts=len(judged_samples), n_contexts_reference_template=n_ref,
                           stats=judge.stats(),
                           mean_by_kind={kind: float(np.mean([np.mean(list(scores[k].scores.values()))
                                                              for k in ok if kinds[k] == kind] or [np.nan]))
                                         for kind in ("ground_truth", "ecr_sample")})
    timings["judge_data"] = time.perf_counter() - t0
    # the critic's training data, kept for inspection and re-analysis
    with open(out_dir / "critic_data.jsonl", "w", encoding="utf-8") as fh:
        for (ctx, resp, _), kind, group, sc in zip(pairs, kinds, groups, scores):
            fh.write(json.dumps({"context_id": group, "context": ctx, "response": resp, "kind": kind,
                                 "scores": sc.scores if sc.ok else None}) + "\n")

    # 2. critic, validated on held-out contexts before it may drive training
    t0 = time.perf_counter()
    critic_cfg = {**rcfg["critic"], "metrics": rcfg["critic"].get("metrics") or list(judge.metrics)}
    critic_report = train_critic([pairs[k][:2] for k in ok], [scores[k].scores for k in ok], critic_cfg,
                                 out_dir / "critic", seed=context.seed, encoder=state.encoder.encoder,
                                 groups=[groups[k] for k in ok], kinds=[kinds[k] for k in ok])
    report["critic"] = {k: v for k, v in critic_report.items() if k != "config"}
    timings["critic"] = time.perf_counter() - t0
    (out_dir / "critic_report.json").write_text(json.dumps(report["critic"], indent=2))
    check_critic(critic_report, rcfg["min_spearman"], min_within_accuracy=rcfg["min_within_accuracy"])

    # 3. rewards
    reward = CombinedReward(rcfg["rewards"], options={"critic": {"critic": critic_report.critic},
                                                      "rec_hit": {"item_names": state.item_names}})

    def reward_inputs(samples, reqs):
        # rec_hit asks for the movies ECR recommends, i.e. those its template names
        return [dict(s, targets=list(items)) for s, (items, _) in zip(samples, reqs)]

    # 4. policy optimisation on the stage-3 generator
    t0 = time.perf_counter()
    rl_samples, rl_requests, n_ref = generator_requests(state, train_rec, rcfg["rl"]["n_prompts"], context.seed, 2,
                                                        placeholder=placeholder)
    rl_prompts = [describer.prompt(r) for r in rl_requests]
    by_prompt = {p: (s, r) for p, s, r in zip(rl_prompts, rl_samples, rl_requests)}
    variance = ComponentVariance(reward.weights)

    def reward_fn(prompts, completions):
        found = [by_prompt[p] for p in prompts]
        samples = reward_inputs([s for s, _ in found], [r for _, r in found])
        _, components = reward.score_components(samples, [" ".join(c.split()) for c in completions])
        total = variance.total(prompts, components)
        return total.tolist(), {k: v.tolist() for k, v in components.items()}

    rl_cfg = dict(rcfg["rl"], seed=context.seed)
    report["rl"] = rl_finetune(describer.model, describer.tokenizer, rl_prompts, reward_fn, rl_cfg, out_dir / "policy",
                               progress=context.progress)
    report["rl"]["components"] = variance.report()
    report["rl"]["n_prompts_reference_template"] = n_ref
    policy = report["rl"].pop("model", None)
    if policy is not None:
        describer.model = policy
    describer.model.eval()
    timings["rl"] = time.perf_counter() - t0

    # 5. held-out test contexts: ECR's replies vs ECR-RL's, by the reward and by the evaluation judge
    t0 = time.perf_counter()
    test_rec = [s for s in data.splits["test"] if s["targets"]]
    held, held_req, _ = generator_requests(state, test_rec, rcfg["heldout"]["n_contexts"], context.seed, 3,
                                           one_per_dialog=True)  # generated templates only, as at inference
    r_ecr = [" ".join(t.split()) for t in describer.generate(held_req, model=reference)]
    r_rl = [" ".join(t.split()) for t in describer.generate(held_req)]
    tot_ecr, comp_ecr = reward.score_components(reward_inputs(held, held_req), r_ecr)
    tot_rl, comp_rl = reward.score_components(reward_inputs(held, held_req), r_rl)
    dialogs = [s["dialog_id"] for s in held]
    report["heldout_reward"] = paired_comparison(
        dialogs, {"total": (tot_ecr, tot_rl), **{k: (comp_ecr[k], comp_rl[k]) for k in comp_ecr}}, seed=context.seed)
    timings["heldout_reward"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    eval_spec = dict(context.judge) if getattr(context, "judge", None) else dict(rcfg["judge"])
    eval_judge = judge if eval_spec == dict(rcfg["judge"]) else \
        make_judge({"rubric": getattr(data, "default_rubric", None), **eval_spec})
    report["heldout_judged"] = judged_comparison(eval_judge, held, r_ecr, r_rl, context.seed, progress=context.progress)
    report["judges"] = {"critic_data": report["judge"],
                        "evaluation": dict(eval_judge.describe(), spec=eval_spec,
                                           source="--judge" if getattr(context, "judge", None) else "rl_stage.judge"),
                        "same_judge": eval_judge.describe() == judge.describe()}
    report["heldout_examples"] = [{"sample_id": s["sample_id"], "ecr": a, "ecr_rl": b}
                                  for s, a, b in list(zip(held, r_ecr, r_rl))[:5]]
    timings["heldout_judged"] = time.perf_counter() - t0
    report["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    return report


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
        self.steps.append(step)
        return total

    def report(self) -> dict:
        names = sorted({n for s in self.steps for n in s})
        return {n: {"within_group_std_mean": float(np.mean([s[n]["within_group_std"] for s in self.steps if n in s])),
                    "batch_std_mean": float(np.mean([s[n]["batch_std"] for s in self.steps if n in s])),
                    "steps_constant_within_groups": int(sum(not s[n]["used"] for s in self.steps if n in s)),
                    "steps": int(sum(n in s for s in self.steps)), "weight": self.weights.get(n)}
                for n in names}


def judged_comparison(judge, held: list[dict], r_ecr: list[str], r_rl: list[str], seed: int,
                      progress: bool = False) -> dict:
    """The evaluation judge on ECR's and ECR-RL's replies of the same contexts: per metric (and
    their mean) the paired difference with a dialogue-bootstrap CI, and the length-controlled
    difference (intercept of the paired difference regressed on the word-count difference)."""
    from tqdm.auto import tqdm

    from crsbench.judge import JudgeInput

    pairs_in = [JudgeInput(list(s["context"]), r, list(s.get("context_roles") or []) or None)
                for s, a, b in zip(held, r_ecr, r_rl) for r in (a, b)]  # ECR's, then ECR-RL's
    scores = []
    bar = tqdm(total=len(pairs_in), desc="judge ECR vs ECR-RL", unit="reply", disable=not progress)
    for start in range(0, len(pairs_in), 8):
        scores += judge.score(pairs_in[start:start + 8])
        bar.update(len(pairs_in[start:start + 8]))
    bar.close()
    both = [k for k in range(len(held)) if scores[2 * k].ok and scores[2 * k + 1].ok]
    metrics = list(judge.metrics)
    dialogs = [held[k]["dialog_id"] for k in both]
    values = {}
    for m in metrics + ["mean"]:
        def get(sc):
            return float(np.mean([sc.scores[x] for x in metrics])) if m == "mean" else float(sc.scores[m])
        values[m] = (np.array([get(scores[2 * k]) for k in both]), np.array([get(scores[2 * k + 1]) for k in both]))
    words_ecr = np.array([len(r_ecr[k].split()) for k in both], float)
    words_rl = np.array([len(r_rl[k].split()) for k in both], float)
    out = {"judge": judge.describe(), "key": judge.key,
           "n_contexts": len(held), "n_judged": len(both), "n_failed": len(held) - len(both),
           "stats": judge.stats(), "seed": seed,
           "paired": paired_comparison(dialogs, values, seed=seed) if both else {},
           "length_words": paired_comparison(dialogs, {"words": (words_ecr, words_rl)}, seed=seed)["words"]
           if both else {},
           "length_controlled": {m: length_controlled_delta(dialogs, b - a, words_rl - words_ecr, seed)
                                 for m, (a, b) in values.items()} if both else {}}
    return out


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
