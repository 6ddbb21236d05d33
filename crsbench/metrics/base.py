"""Metric plugins: a metric scores a set of evaluation units under resampling weights.

Splitting ``prepare`` (once, possibly slow) from ``score`` (per bootstrap replicate, fast)
lets every metric, corpus-level ones included, get a dialogue-level bootstrap CI.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

RECOMMENDATION = "recommendation"
GENERATION = "generation"
JUDGE = "judge"


@dataclass
class Units:
    """Evaluation units of one kind, each tied to a dialogue.

    Recommendation units are (sample, target item) pairs with fields ``rank`` (float array,
    1-based rank of the target under the protocol, ``inf`` if unranked) and ``feedback``
    (list of "liked" / "disliked" / "unknown").
    Generation units are responses with fields ``hyp`` and ``ref`` (lists of str) and
    ``hyp_items`` (int array: item mentions found in each hypothesis).
    """

    kind: str
    dialog: np.ndarray
    fields: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.dialog)

    def __getitem__(self, key: str):
        return self.fields[key]


class Metric:
    """Subclasses set ``name``, ``kind`` and implement ``prepare`` and ``score``."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = RECOMMENDATION
    description: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    # A statistic of the *set* of units (e.g. distinct n-grams) is biased under resampling
    # with replacement: a drawn-twice response adds no new n-grams. For such metrics the
    # harness shifts the bootstrap replicates by (point estimate - their mean) before
    # taking percentiles (a bias-corrected percentile interval).
    bootstrap_bias_correction: ClassVar[bool] = False

    def prepare(self, units: Units) -> Any:
        """Per-unit precomputation, done once."""
        raise NotImplementedError

    def score(self, prepared: Any, weights: np.ndarray) -> float:
        """The metric when unit i counts ``weights[i]`` times (all ones = the point estimate)."""
        raise NotImplementedError

    def compute(self, units: Units) -> float:
        return self.score(self.prepare(units), np.ones(len(units)))

    def count(self, prepared: Any, n_units: int) -> int:
        """The ``n`` reported with the metric: how many units (or pairs) it is computed over.
        Default: every unit; metrics that use only some of them say how many."""
        return n_units


class MeanMetric(Metric):
    """A mean of per-unit values over the units where ``mask`` is true."""

    def values(self, units: Units) -> tuple[np.ndarray, np.ndarray]:
        """Return (values, mask) arrays of length ``len(units)``."""
        raise NotImplementedError

    def prepare(self, units: Units):
        values, mask = self.values(units)
        return np.asarray(values, dtype=float), np.asarray(mask, dtype=bool)

    def count(self, prepared, n_units: int) -> int:
        return int(np.count_nonzero(prepared[1]))  # the units the mean is over

    def score(self, prepared, weights: np.ndarray) -> float:
        values, mask = prepared
        w = weights * mask
        total = w.sum()
        return float((w * values).sum() / total) if total > 0 else float("nan")
