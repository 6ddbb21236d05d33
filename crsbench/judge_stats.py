"""A judge's agreement with human labels: weighted Pearson and Spearman (pooled and within
system) with conversation-bootstrap CIs from :mod:`crsbench.bootstrap`, and the same numbers
for trivial predictors that read no meaning. numpy loads when something is computed."""
from __future__ import annotations

import math
from typing import Any, Sequence

from crsbench.judge_benchmark import CI_LEVEL, STAT_KEYS, YEAR, Unit


# -- statistics (numpy, loaded on use) ---------------------------------------------------------
def _midranks(values, weights):
    """(B, n) ranks of ``values`` (n,) in B weighted samples: a unit with weight w stands for
    w copies; ties get their mean rank, so this equals ranking the expanded sample."""
    import numpy as np

    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    tied = np.add.reduceat(weights[:, order], starts, axis=1)
    ranks = np.cumsum(tied, axis=1) - tied + (tied + 1) / 2
    tie_of = np.empty(len(values), dtype=int)
    tie_of[order] = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(values)]))
    return ranks[:, tie_of]


def _pearson(x, y, weights):
    """Weighted Pearson per row of ``weights`` (B, n); x, y: (n,) or (B, n). NaN when constant."""
    import numpy as np

    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = x - ((weights * x).sum(axis=1) / total)[:, None]
        dy = y - ((weights * y).sum(axis=1) / total)[:, None]
        vx, vy = (weights * dx * dx).sum(axis=1), (weights * dy * dy).sum(axis=1)
        r = (weights * dx * dy).sum(axis=1) / np.sqrt(vx * vy)
    r[~(vx > 1e-12 * total) | ~(vy > 1e-12 * total) | (total < 3)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _spearman(x, y, weights):
    return _pearson(_midranks(x, weights), _midranks(y, weights), weights)


def _ci(replicates) -> list | None:
    from crsbench.bootstrap import percentile_ci

    lo, hi = percentile_ci(replicates, 1 - CI_LEVEL)
    return None if math.isnan(lo) else [round(lo, 6), round(hi, 6)]


def _num(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def correlations(pred: Sequence[float], gold: Sequence[float], groups: Sequence[str], systems: Sequence[str],
                 counts=None, group_ids: dict | None = None) -> dict:
    """Pooled Pearson and Spearman, the mean per-system Spearman, and their bootstrap CIs.
    ``counts``: (B, G) draws of how often each group appears (``crsbench.bootstrap``), indexed
    by ``group_ids`` (group -> column); None: no CIs."""
    import numpy as np

    x, y = np.asarray(pred, dtype=float), np.asarray(gold, dtype=float)
    n = len(x)
    out: dict[str, Any] = dict.fromkeys(STAT_KEYS)
    out["n"] = n
    if n == 0:
        return out
    ones = np.ones((1, n))
    system_index = {s: np.array([i for i, t in enumerate(systems) if t == s]) for s in sorted(set(systems))}

    def within(weights):
        per = [_spearman(x[idx], y[idx], weights[:, idx]) for idx in system_index.values() if len(idx) >= 3]
        if not per:
            return np.full(weights.shape[0], np.nan)
        with np.errstate(invalid="ignore"), _quiet():
            stacked = np.vstack(per)
            mean = np.nanmean(stacked, axis=0)
        return mean

    out["pearson"] = _num(_pearson(x, y, ones)[0])
    out["spearman"] = _num(_spearman(x, y, ones)[0])
    out["within_system_spearman"] = _num(within(ones)[0])
    out["n_systems"] = len(system_index)
    if counts is not None and len(counts):
        weights = counts[:, [group_ids[g] for g in groups]]
        out["pearson_ci"] = _ci(_pearson(x, y, weights)) if out["pearson"] is not None else None
        out["spearman_ci"] = _ci(_spearman(x, y, weights)) if out["spearman"] is not None else None
        out["within_system_spearman_ci"] = (_ci(within(weights)) if out["within_system_spearman"] is not None
                                            else None)
    return out


class _quiet:
    """Silence numpy's 'mean of empty slice' warnings (all-NaN columns give NaN, as wanted)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


# -- trivial predictors ------------------------------------------------------------------------
def _words(text: str) -> int:
    return len(str(text).split())


def trivial_predictions(units: Sequence[Unit], level: str, aspect: str) -> dict[str, list[float]]:
    """Predictors that read no meaning, on the same units: reply length in words, whether the
    reply contains a ``(YYYY)`` year (turn level), the number of turns (dialogue level), and
    the mean human label of the writing system over all its units of this data (in-sample,
    plain: it sees each unit's own label; it is constant within a system, so it has no
    within-system correlation)."""
    by_system: dict[str, list[float]] = {}
    for u in units:
        if aspect in u.labels:
            by_system.setdefault(u.system, []).append(u.labels[aspect])
    means = {s: sum(v) / len(v) for s, v in by_system.items()}
    out: dict[str, list[float]] = {}
    if level == "turn":
        out["reply length (words)"] = [float(_words(u.item.response)) for u in units]
        out["contains a (YYYY) year"] = [float(bool(YEAR.search(str(u.item.response)))) for u in units]
    else:
        out["number of turns"] = [float(u.n_turns) for u in units]
    out["system mean label"] = [means.get(u.system, float("nan")) for u in units]
    return out


# -- evaluation --------------------------------------------------------------------------------
def _draws(units: Sequence[Unit], n_bootstrap: int, seed: int):
    from crsbench.bootstrap import draw_dialog_counts

    group_ids = {g: i for i, g in enumerate(dict.fromkeys(u.group for u in units))}
    return draw_dialog_counts(len(group_ids), n_bootstrap, seed) if n_bootstrap else None, group_ids


def aspect_stats(units: Sequence[Unit], predictions: dict, aspects: Sequence[str], level: str,
                 n_bootstrap: int = 1000, seed: int = 0) -> tuple[dict, dict]:
    """``(aspects, trivial)`` of a record: per aspect the correlations of ``predictions``
    (unit key -> {aspect: value}) with the labels, over the units that have both; and the same
    for every trivial predictor. One bootstrap draw matrix is shared by all of them."""
    counts, group_ids = _draws(units, n_bootstrap, seed)
    judged, trivial = {}, {}
    for aspect in aspects:
        have = [u for u in units if aspect in u.labels]
        if not have:
            continue
        scored = [u for u in have if aspect in (predictions.get(u.key) or {})]
        judged[aspect] = correlations([predictions[u.key][aspect] for u in scored],
                                      [u.labels[aspect] for u in scored], [u.group for u in scored],
                                      [u.system for u in scored], counts, group_ids)
        judged[aspect].update(n_missing=len(have) - len(scored), level=level)
        for name, values in trivial_predictions(have, level, aspect).items():
            trivial.setdefault(name, {})[aspect] = dict(correlations(
                values, [u.labels[aspect] for u in have], [u.group for u in have], [u.system for u in have],
                counts, group_ids), level=level)
    return judged, trivial
