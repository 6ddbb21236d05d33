"""The critic's held-out statistics: Spearman, R^2 and within-context pairwise accuracy, with
bootstrap CIs over whole contexts.

The replicates draw context indices (``default_rng([seed, 11])`` / ``[seed, 12]``), not
``crsbench.bootstrap.draw_dialog_counts``'s multinomial counts: those would give other
replicates and so other CIs than the critic reports already written; and the Spearman
replicate repeats rows, which count weights cannot express. The percentile interval is
``crsbench.bootstrap.percentile_ci`` (the same 2.5 and 97.5 percentiles).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from crsbench.bootstrap import percentile_ci

TIE = 1e-9               # judge targets closer than this are a tie (the pair is not compared)
N_BOOT = 1000


def spearman(pred: np.ndarray, target: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(pred) < 3 or np.ptp(pred) == 0 or np.ptp(target) == 0:
        return None
    value = float(spearmanr(pred, target).statistic)
    return value if math.isfinite(value) else None


def r2(pred: np.ndarray, target: np.ndarray) -> float | None:
    if len(target) < 2:
        return None
    total = float(np.sum((target - target.mean()) ** 2))
    if total <= 0:
        return None
    return 1.0 - float(np.sum((target - pred) ** 2)) / total


def within_context_pairs(group: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (i, j) of every same-context pair whose judge targets differ (no ties, no NaN)."""
    left, right = [], []
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        for a in range(len(rows)):
            for b in range(a + 1, len(rows)):
                i, j = rows[a], rows[b]
                if np.isfinite(target[i]) and np.isfinite(target[j]) and abs(target[i] - target[j]) > TIE:
                    left.append(i)
                    right.append(j)
    return np.array(left, dtype=int), np.array(right, dtype=int)


def pairwise_accuracy(group: np.ndarray, pred: np.ndarray, target: np.ndarray, seed: int,
                      kinds: Sequence[str] | None = None, n_boot: int = N_BOOT) -> dict:
    """Within-context pairwise accuracy with a bootstrap CI over contexts (and by pair kind)."""
    i, j = within_context_pairs(group, target)
    if not len(i):
        return {"accuracy": None, "ci_low": None, "ci_high": None, "n_pairs": 0,
                "n_contexts": int(len(np.unique(group)))}
    agree = np.sign(pred[i] - pred[j]) * np.sign(target[i] - target[j])
    credit = np.where(agree > 0, 1.0, np.where(agree == 0, 0.5, 0.0))
    pair_group = group[i]
    contexts = np.unique(pair_group)
    per_context = np.array([[credit[pair_group == g].sum(), (pair_group == g).sum()] for g in contexts])
    rng = np.random.default_rng([seed, 11])
    draws = rng.integers(0, len(contexts), size=(n_boot, len(contexts)))
    sums = per_context[draws].sum(axis=1)
    boot = sums[:, 0] / sums[:, 1]
    lo, hi = percentile_ci(boot)  # every replicate is finite: each context has a compared pair
    out = {"accuracy": float(credit.mean()), "ci_low": lo, "ci_high": hi, "n_pairs": int(len(i)),
           "n_contexts": int(len(contexts))}
    if kinds is not None:
        kinds = np.asarray(kinds)
        by_kind = {}
        for name in sorted({" vs ".join(sorted((a, b))) for a, b in zip(kinds[i], kinds[j])}):
            keep = np.array([" vs ".join(sorted((a, b))) == name for a, b in zip(kinds[i], kinds[j])])
            by_kind[name] = {"accuracy": float(credit[keep].mean()), "n_pairs": int(keep.sum())}
        out["by_kind"] = by_kind
    return out


def spearman_ci(group: np.ndarray, pred: np.ndarray, target: np.ndarray, seed: int, n_boot: int = N_BOOT) -> dict:
    """Pooled Spearman over held-out rows, with a bootstrap CI that resamples whole contexts."""
    ok = np.isfinite(target)
    group, pred, target = group[ok], pred[ok], target[ok]
    value = spearman(pred, target)
    contexts = np.unique(group)
    rows = [np.flatnonzero(group == g) for g in contexts]
    rng = np.random.default_rng([seed, 12])
    boot = []
    for _ in range(n_boot if value is not None and len(contexts) > 1 else 0):
        idx = np.concatenate([rows[k] for k in rng.integers(0, len(contexts), size=len(contexts))])
        rho = spearman(pred[idx], target[idx])
        if rho is not None:
            boot.append(rho)
    lo, hi = percentile_ci(np.array(boot)) if boot else (None, None)
    return {"spearman": value, "ci_low": lo, "ci_high": hi, "n_contexts": int(len(contexts))}
