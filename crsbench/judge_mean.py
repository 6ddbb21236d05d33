""":class:`MeanJudge`: the per-metric mean of several judges, given as instances or as
specs resolved through the plugin registry. Standard library only."""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from crsbench.errors import UserError
from crsbench.judge_base import Judge, JudgeInput, JudgeScore
from crsbench.rubric import Rubric


class MeanJudge(Judge):
    """The per-metric mean of several judges (same rubric version). A judge that failed on a
    pair, or lacks a metric, is left out of that pair's mean; the pair fails only when every
    judge failed on it. Option ``judges``: judge instances, or ``{"name": ..., **options}``
    specs resolved through the plugin registry."""

    name = "mean"
    description = "Per-metric mean of several judges (option judges: a list of judges or judge specs)."

    def __init__(self, judges: Sequence[Judge | dict | str] = (), rubric: Rubric | str | None = None, **options):
        super().__init__(rubric=rubric, judges=judges, **options)
        self.check_options({"judges"})
        self.judges = [_resolve_judge(j, rubric) for j in judges]
        if not self.judges:
            raise UserError("judge 'mean': option judges must name at least one judge")
        versions = {j.rubric_version for j in self.judges}
        if len(versions) != 1:
            raise UserError(f"judge 'mean': its judges use different rubric versions {sorted(versions)}")
        self.rubric_version = versions.pop()
        self._rubric = self.judges[0].rubric

    @property
    def model_id(self) -> str:
        return "mean(" + "+".join(j.model_id for j in self.judges) + ")"

    def settings(self) -> dict:
        return {"judges": [{"model": j.model_id, "settings": j.settings()} for j in self.judges]}

    def score(self, items: list[JudgeInput]) -> list[JudgeScore]:
        items = list(items)
        per_judge = [j.score(items) for j in self.judges]
        out = []
        for i in range(len(items)):
            results = [r[i] for r in per_judge]
            scores = {}
            for metric in self.metrics:
                values = [r.scores[metric] for r in results if r.ok and metric in r.scores]
                if values:
                    scores[metric] = sum(values) / len(values)
            if scores:
                out.append(JudgeScore(scores))
            else:
                errors = "; ".join(f"{j.model_id}: {r.error}" for j, r in zip(self.judges, results))
                self.count("errors")
                out.append(JudgeScore(None, f"every judge failed ({errors})"))
        return out

    def stats(self) -> dict[str, float]:
        merged: Counter = Counter(super().stats())
        for judge in self.judges:
            for key, value in judge.stats().items():
                merged[key] += value
        return dict(merged)


def _resolve_judge(spec: Judge | dict | str, rubric: Rubric | str | None = None) -> Judge:
    """A judge instance from an instance or a ``{"name": ..., **options}`` spec; a spec
    without a rubric gets ``rubric``."""
    if isinstance(spec, Judge):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise UserError(f"not a judge or judge spec: {spec!r}")
    from crsbench.plugins import get_registry

    options = dict(spec)
    if rubric is not None:
        options.setdefault("rubric", rubric)
    name = options.pop("name")
    judges = get_registry().judges()
    if name not in judges:
        raise UserError(f"unknown judge {name!r} (known: {', '.join(sorted(judges)) or 'none'})")
    return get_registry().use("judges", name).obj(**options)
