"""Judge metrics: the mean score an LLM judge gave the sampled responses, per judge metric.

Units are judged responses (``record["judge"]``); each run's judge and rubric version form
their own group, ``judge/<judge id>/<rubric version>/<metric>``, so scores of different
judges or rubrics never mix.
"""
from __future__ import annotations

import numpy as np

from crsbench.metrics.base import JUDGE, MeanMetric

JUDGE_METRICS = ("emotional_intensity", "emotional_persuasiveness", "logical_persuasiveness",
                 "informativeness", "lifelikeness")


class JudgeScore(MeanMetric):
    kind = JUDGE

    def __init__(self, name: str):
        self.name = name
        self.description = f"mean judge score for {name.replace('_', ' ')} (0-9)"

    def values(self, units):
        values = np.asarray(units[self.name], dtype=float) if self.name in units.fields else \
            np.full(len(units), np.nan)
        return np.nan_to_num(values), np.isfinite(values)


def all_metrics() -> list[JudgeScore]:
    return [JudgeScore(name) for name in JUDGE_METRICS]
