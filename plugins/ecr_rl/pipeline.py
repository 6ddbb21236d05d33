"""ECR-RL after ECR: judge -> critic (validated) -> rewards -> policy optimisation -> held-out check.

1. Judge data: for a seeded sample of training contexts, the ground-truth reply and a few
   sampled ECR replies (template filled + sampled description) are scored by the judge.
2. Critic: trained on those scores; its held-out Spearman gates RL (``min_spearman``).
3. Rewards: the configured weighted sum of reward plugins (critic, bleu, distinct, rec_hit,
   emotion, length); each component is logged.
4. Policy optimisation: TRL on the stage-3 generator, KL-penalised towards ECR's.
5. Held-out: the same reward on unseen test contexts for ECR's and ECR-RL's replies, with a
   paired bootstrap over dialogues.
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
def knowledge_requests(state, samples):
    """(item described, template, filled template) per sample, as ECR's reply would use them."""
    from crsbench_plugins.ecr.pipeline import templates_for, fill_template, rank_items

    for start in range(0, len(samples), 64):
        rank_items(state, samples[start:start + 64], top=20)
    out = []
    for s, tpl in zip(samples, templates_for(state, samples)):
        seen = set(s["context_items"])
        ranked = [i for i in state.rankings[s["sample_id"]] if i not in seen] or state.rankings[s["sample_id"]]
        filled, _ = fill_template(tpl, [state.item_names.get(i, str(i)) for i in ranked])
        out.append((ranked[0], tpl, filled))
    return out


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


def _seeded(samples, n, seed, salt):
    rng = np.random.default_rng([seed, salt])
    idx = sorted(rng.choice(len(samples), size=min(n, len(samples)), replace=False).tolist())
    return [samples[i] for i in idx]


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

    # 1. judge data: ground truth + sampled ECR replies
    t0 = time.perf_counter()
    dcfg = rcfg["critic_data"]
    judged_samples = _seeded(train_rec, dcfg["n_contexts"], context.seed, 1)
    requests = knowledge_requests(state, judged_samples)
    prompts = [describer.knowledge.prompt(item, tpl, cfg["responses"]["max_triples"]) for item, tpl, _ in requests]
    sampled = sample_descriptions(describer.model, describer.tokenizer, prompts, dcfg["samples_per_context"],
                                  dcfg["temperature"], dcfg["top_p"], cfg["responses"]["max_new_tokens"], context.seed)
    pairs, kinds = [], []
    for s, (_, _, filled), descs in zip(judged_samples, requests, sampled):
        pairs.append((list(s["context"]), s["response"]))
        kinds.append("ground_truth")
        for d in descs:
            pairs.append((list(s["context"]), f"{filled} {d}".strip()))
            kinds.append("ecr_sample")
    # the task's default rubric unless the judge spec names one
    judge = make_judge({"rubric": getattr(data, "default_rubric", None), **rcfg["judge"]})
    scores = judge.score([JudgeInput(c, r) for c, r in pairs])
    ok = [k for k, sc in enumerate(scores) if sc.ok]
    report["judge"] = dict(judge.describe(), n_pairs=len(pairs), n_failed=len(pairs) - len(ok), stats=judge.stats(),
                           mean_by_kind={kind: float(np.mean([np.mean(list(scores[k].scores.values()))
                                                              for k in ok if kinds[k] == kind] or [np.nan]))
                                         for kind in ("ground_truth", "ecr_sample")})
    timings["judge_data"] = time.perf_counter() - t0
    # the critic's training data, kept for inspection and re-analysis
    with open(out_dir / "critic_data.jsonl", "w", encoding="utf-8") as fh:
        for k, ((ctx, resp), kind, sc) in enumerate(zip(pairs, kinds, scores)):
            fh.write(json.dumps({"context": ctx, "response": resp, "kind": kind,
                                 "scores": sc.scores if sc.ok else None}) + "\n")

    # 2. critic, validated on held-out pairs before it may drive training
    t0 = time.perf_counter()
    critic_cfg = {**rcfg["critic"], "metrics": rcfg["critic"].get("metrics") or list(judge.metrics)}
    critic_report = train_critic([pairs[k] for k in ok], [scores[k].scores for k in ok], critic_cfg,
                                 out_dir / "critic", seed=context.seed, encoder=state.encoder.encoder)
    report["critic"] = {k: v for k, v in critic_report.items() if k != "config"}
    timings["critic"] = time.perf_counter() - t0
    (out_dir / "critic_report.json").write_text(json.dumps(report["critic"], indent=2))
    check_critic(critic_report, rcfg["min_spearman"])

    # 3. rewards
    reward = CombinedReward(rcfg["rewards"], options={"critic": {"critic": critic_report.critic},
                                                      "rec_hit": {"item_names": state.item_names}})

    def reward_inputs(samples, reqs, descriptions):
        # rec_hit asks for the movie ECR recommends, i.e. the one being described
        rs = [dict(s, targets=[item]) for s, (item, _, _) in zip(samples, reqs)]
        return rs, [f"{filled} {d}".strip() for (_, _, filled), d in zip(reqs, descriptions)]

    # 4. policy optimisation on the stage-3 generator
    t0 = time.perf_counter()
    rl_samples = _seeded(train_rec, rcfg["rl"]["n_prompts"], context.seed, 2)
    rl_requests = knowledge_requests(state, rl_samples)
    rl_prompts = [describer.knowledge.prompt(item, tpl, cfg["responses"]["max_triples"])
                  for item, tpl, _ in rl_requests]
    by_prompt = {p: (s, r) for p, s, r in zip(rl_prompts, rl_samples, rl_requests)}

    def reward_fn(prompts, completions):
        pairs_ = [by_prompt[p] for p in prompts]
        samples, responses = reward_inputs([s for s, _ in pairs_], [r for _, r in pairs_], completions)
        total, components = reward.score_components(samples, responses)
        return total.tolist(), {k: v.tolist() for k, v in components.items()}

    rl_cfg = dict(rcfg["rl"], seed=context.seed)
    report["rl"] = rl_finetune(describer.model, describer.tokenizer, rl_prompts, reward_fn, rl_cfg, out_dir / "policy",
                               progress=context.progress)
    policy = report["rl"].pop("model", None)
    if policy is not None:
        describer.model = policy
    describer.model.eval()
    timings["rl"] = time.perf_counter() - t0

    # 5. the reward on held-out test contexts: ECR's replies vs ECR-RL's
    t0 = time.perf_counter()
    test_rec = [s for s in data.splits["test"] if s["targets"]]
    held = _seeded(test_rec, rcfg["heldout"]["n_contexts"], context.seed, 3)
    held_req = knowledge_requests(state, held)
    held_prompts = [describer.knowledge.prompt(item, tpl, cfg["responses"]["max_triples"]) for item, tpl, _ in held_req]
    from crsbench_plugins.ecr import generator

    def replies(model):
        return generator.generate(model, describer.tokenizer, held_prompts,
                                  max_new_tokens=cfg["responses"]["max_new_tokens"],
                                  batch_size=cfg["decode"]["batch_size"],
                                  no_repeat_ngram_size=cfg["decode"]["no_repeat_ngram_size"], progress=False)

    ecr_desc, rl_desc = replies(reference), replies(describer.model)
    s_ecr, r_ecr = reward_inputs(held, held_req, ecr_desc)
    s_rl, r_rl = reward_inputs(held, held_req, rl_desc)
    tot_ecr, comp_ecr = reward.score_components(s_ecr, r_ecr)
    tot_rl, comp_rl = reward.score_components(s_rl, r_rl)
    report["heldout_reward"] = paired_comparison(
        [s["dialog_id"] for s in held], {"total": (tot_ecr, tot_rl), **{k: (comp_ecr[k], comp_rl[k]) for k in comp_ecr}},
        seed=context.seed)
    report["heldout_examples"] = [{"sample_id": s["sample_id"], "ecr": a, "ecr_rl": b}
                                  for s, a, b in list(zip(held, r_ecr, r_rl))[:5]]
    timings["heldout"] = time.perf_counter() - t0
    report["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    return report


def paired_comparison(dialogs: list[str], values: dict[str, tuple], seed: int, n_boot: int = 1000) -> dict:
    """Mean of A and B, B - A with a 95% CI and a paired dialogue-bootstrap p-value, per component."""
    from crsbench.bootstrap import draw_dialog_counts, paired_p_value, percentile_ci

    index = {d: i for i, d in enumerate(sorted(set(dialogs)))}
    unit = np.array([index[d] for d in dialogs])
    counts = draw_dialog_counts(len(index), n_boot, seed)[:, unit]
    out = {}
    for name, (a, b) in values.items():
        a, b = np.asarray(a, float), np.asarray(b, float)
        deltas = (counts * (b - a)).sum(1) / counts.sum(1)
        lo, hi = percentile_ci(deltas)
        out[name] = {"ecr": float(a.mean()), "ecr_rl": float(b.mean()), "delta": float((b - a).mean()),
                     "ci_low": lo, "ci_high": hi, "p_value": paired_p_value(deltas), "n": len(a)}
    return out
