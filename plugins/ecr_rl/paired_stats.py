"""ECR-RL's paired statistics on held-out contexts (B vs A), on crsbench/bootstrap.py's dialogue
bootstrap: the mean difference and the length-controlled difference, with CIs and p-values."""
from __future__ import annotations

import numpy as np


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
