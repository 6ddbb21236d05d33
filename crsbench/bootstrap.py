"""Dialogue-level bootstrap: confidence intervals and paired significance tests.

Resampling whole dialogues (not turns or targets) respects the correlation between the
samples of one dialogue. One matrix of draws is shared by every metric of a run, and by
both runs in a paired comparison, so the replicates line up.
"""
from __future__ import annotations

import numpy as np


def draw_dialog_counts(n_dialogs: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_dialogs) matrix: how often each dialogue appears in each replicate."""
    rng = np.random.default_rng(seed)
    if n_dialogs == 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n_dialogs, np.full(n_dialogs, 1.0 / n_dialogs), size=n_boot).astype(float)


def replicate_scores(metric, prepared, unit_dialog: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The metric on every bootstrap replicate.

    For a metric with ``bootstrap_bias_correction`` the replicates are shifted so that their
    mean is the point estimate (see ``Metric.bootstrap_bias_correction``).
    """
    reps = np.array([metric.score(prepared, row[unit_dialog]) for row in counts])
    if getattr(metric, "bootstrap_bias_correction", False) and reps.size:
        point = metric.score(prepared, np.ones(len(unit_dialog)))
        finite = reps[np.isfinite(reps)]
        if finite.size and np.isfinite(point):
            reps = reps + (point - finite.mean())
    return reps


def percentile_ci(replicates: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def paired_p_value(deltas: np.ndarray) -> float:
    """Two-sided bootstrap p-value for 'no difference' from replicate differences B - A."""
    finite = deltas[np.isfinite(deltas)]
    if finite.size == 0:
        return float("nan")
    if np.all(finite == 0):
        return 1.0
    below = np.mean(finite <= 0)
    above = np.mean(finite >= 0)
    return float(min(1.0, 2 * min(below, above)))
