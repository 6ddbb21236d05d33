"""ECR-RL's held-out study: every policy's replies (each seed's RL arm and control) against ECR's,
judged by the evaluation judge on the same contexts, and the verdict."""
from __future__ import annotations

import numpy as np

from crsbench_plugins.ecr_rl.paired_stats import length_controlled_delta, paired_comparison


def arm_name(arm: str, seed: int, seeds: list[int]) -> str:
    """``rl`` (the first seed's judge-rewarded policy, the one the run predicts with),
    ``rl_s<seed>`` for the other seeds, ``control_s<seed>`` for the controls."""
    if arm == "rl" and seed == seeds[0]:
        return "rl"
    return f"{arm}_s{seed}"


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
