"""Judge metrics: the mean score an LLM judge gave the sampled responses, per rubric metric.

Units are judged responses (``record["judge"]``); each run's judge and rubric form their own
group, ``judge/<judge id>/<rubric name>/<metric>``, so scores of different judges or rubrics
never mix. The metric names come from the rubrics: the plugin that registers a rubric
registers a :class:`JudgeScore` per criterion (the judges plugin does for its rubric), and
a judged field that no plugin registered is still scored, by :func:`score_for` (so a new
rubric's scores are never dropped silently).
"""
from __future__ import annotations

import numpy as np

from crsbench.metrics.base import JUDGE, MeanMetric


class JudgeScore(MeanMetric):
    kind = JUDGE

    def __init__(self, name: str):
        self.name = name
        self.description = f"mean judge score for {name.replace('_', ' ')} (0-9)"

    def values(self, units):
        values = np.asarray(units[self.name], dtype=float) if self.name in units.fields else \
            np.full(len(units), np.nan)
        return np.nan_to_num(values), np.isfinite(values)


def score_for(name: str) -> JudgeScore:
    """The mean-score metric of a judged field that no plugin registered."""
    return JudgeScore(name)
