"""Built-in recommendation metrics.

Every target item is its own unit (a sample with three targets gives three units), ranked
against the full catalogue, as UniCRS and ECR count. Unit fields: ``rank`` (float array,
1-based, ``inf`` = the model did not rank the item) and ``feedback`` ("liked" /
"disliked" / "unknown"; ``None`` on a task without feedback).

Metrics with ``needs_feedback = True`` (RT@k, AUC) are undefined without feedback: the
harness does not compute them for a task that has none (``Task.has_feedback = False``).
"""
from __future__ import annotations

import numpy as np

from crsbench.metrics.base import RECOMMENDATION, MeanMetric, Metric, Units

LIKED = "liked"
DISLIKED = "disliked"


def _ranks(units: Units) -> np.ndarray:
    return np.asarray(units["rank"], dtype=float).reshape(-1)


def _feedback_is(units: Units, value: str) -> np.ndarray:
    return np.array([fb == value for fb in units["feedback"]], dtype=bool).reshape(-1)


class _AtK(MeanMetric):
    kind = RECOMMENDATION
    prefix = ""

    def __init__(self, k: int):
        self.k = int(k)
        self.name = f"{self.prefix}@{self.k}"


class RecallAtK(_AtK):
    """Recall@k (hit rate): 1 if the target's rank is <= k, else 0; mean over targets."""

    prefix = "recall"

    def __init__(self, k: int):
        super().__init__(k)
        self.description = f"Share of target items ranked in the top {self.k} (per target)."

    def values(self, units):
        rank = _ranks(units)
        return (rank <= self.k).astype(float), np.ones(len(rank), dtype=bool)


class NDCGAtK(_AtK):
    """NDCG@k with one relevant item per unit: 1/log2(rank + 1) if rank <= k, else 0."""

    prefix = "ndcg"

    def __init__(self, k: int):
        super().__init__(k)
        self.description = f"NDCG@{self.k} with a single relevant item per target: 1/log2(rank+1) in the top {self.k}."

    def values(self, units):
        rank = _ranks(units)
        hit = rank <= self.k
        out = np.zeros(len(rank))
        out[hit] = 1.0 / np.log2(rank[hit] + 1.0)
        return out, np.ones(len(rank), dtype=bool)


class MRRAtK(_AtK):
    """MRR@k: 1/rank if rank <= k, else 0; mean over targets."""

    prefix = "mrr"

    def __init__(self, k: int):
        super().__init__(k)
        self.description = f"Mean reciprocal rank of the target, cut off at {self.k}."

    def values(self, units):
        rank = _ranks(units)
        hit = rank <= self.k
        out = np.zeros(len(rank))
        out[hit] = 1.0 / rank[hit]
        return out, np.ones(len(rank), dtype=bool)


class RTAtK(_AtK):
    """Recall@k over only the targets whose feedback is "liked" (other targets masked out).

    NaN when no target is liked; its ``n`` is the number of liked targets.
    """

    prefix = "rt"
    needs_feedback = True

    def __init__(self, k: int):
        super().__init__(k)
        self.description = f"Recall@{self.k} over liked targets only."

    def values(self, units):
        rank = _ranks(units)
        return (rank <= self.k).astype(float), _feedback_is(units, LIKED)


class AUC(Metric):
    """AUC of liked vs disliked targets over the whole split (never per batch).

    A target's score is its negative rank (ranked better = higher score; unranked targets
    have rank ``inf`` and tie with each other). Ties count 1/2. With unit weights ``w``::

        AUC = sum_{i liked} sum_{j disliked} w_i w_j (1[s_i > s_j] + 1/2 1[s_i = s_j])
              / (W_liked * W_disliked)

    NaN if either class has zero total weight. Targets with "unknown" feedback are ignored.
    Its ``n`` is the number of (liked, disliked) pairs.
    ``prepare`` sorts once (O(n log n)); ``score`` is O(n) per replicate.
    """

    name = "auc"
    kind = RECOMMENDATION
    needs_feedback = True
    description = "AUC of liked vs disliked targets (score = -rank, ties count 1/2) over the whole split."

    def prepare(self, units):
        rank = _ranks(units)
        liked = np.flatnonzero(_feedback_is(units, LIKED))
        disliked = np.flatnonzero(_feedback_is(units, DISLIKED))
        d_rank = rank[disliked]
        levels = np.unique(d_rank)  # sorted distinct disliked ranks (inf last)
        d_bin = np.searchsorted(levels, d_rank)  # each disliked target's level
        l_rank = rank[liked]
        # s_i > s_j  <=>  rank_i < rank_j: disliked levels from `above` on are ranked worse
        above = np.searchsorted(levels, l_rank, side="right")
        left = np.searchsorted(levels, l_rank, side="left")
        tie = np.where(left < above, left, -1)  # the disliked level equal to rank_i, if any
        return liked, disliked, d_bin, len(levels), above, tie

    def count(self, prepared, n_units: int) -> int:
        return len(prepared[0]) * len(prepared[1])  # liked x disliked pairs

    def score(self, prepared, weights):
        liked, disliked, d_bin, n_levels, above, tie = prepared
        weights = np.asarray(weights, dtype=float)
        w_l = weights[liked]
        w_d = weights[disliked]
        total_l, total_d = w_l.sum(), w_d.sum()
        if total_l <= 0 or total_d <= 0:
            return float("nan")
        per_level = np.bincount(d_bin, weights=w_d, minlength=n_levels)
        # worse[m] = weight of disliked targets at levels >= m (worse[n_levels] = 0)
        worse = np.zeros(n_levels + 1)
        worse[:n_levels] = np.cumsum(per_level[::-1])[::-1]
        tied = np.where(tie >= 0, per_level[np.maximum(tie, 0)], 0.0)
        wins = worse[above] + 0.5 * tied
        return float(np.dot(w_l, wins) / (total_l * total_d))


def all_metrics() -> list[Metric]:
    return [
        *(RecallAtK(k) for k in (1, 10, 50)),
        *(NDCGAtK(k) for k in (10, 50)),
        *(MRRAtK(k) for k in (10, 50)),
        *(RTAtK(k) for k in (1, 10, 50)),
        AUC(),
    ]
