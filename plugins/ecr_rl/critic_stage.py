"""ECR-RL's optional critic stage (``rl_stage.critic``): judge data from ECR's generator, a critic
trained on it with contexts split, and its validation gate."""
from __future__ import annotations

import json
import time

import numpy as np

from crsbench_plugins.ecr_rl.replies import generator_requests, sample_descriptions


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
