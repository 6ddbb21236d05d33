"""What a judge benchmark plugin provides (the ``register_judge_benchmarks`` hook): rated
units, the loaded data, the benchmark object, and the constants of a validation record.

Standard library only at import: plugins import :class:`JudgeBenchmark` at registration.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from crsbench.errors import UserError

SCHEMA = "crsbench-judge-validation/1"
RESULTS_SUBDIR = Path("results") / "judges"   # under the leaderboard root
LEVELS = ("turn", "dialogue")
CI_LEVEL = 0.95
YEAR = re.compile(r"\(\d{4}\)")
STAT_KEYS = ("pearson", "spearman", "pearson_ci", "spearman_ci", "within_system_spearman",
             "within_system_spearman_ci", "n")
VALIDATION_PATH_ENV = "CRSBENCH_JUDGE_VALIDATION_PATH"


# -- what a benchmark plugin provides ---------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """One human-rated thing a judge scores. ``key``: how run files address it (e.g.
    ``(conv_id, turn_ind)`` or ``(conv_id,)``); ``group``: the conversation (the bootstrap
    resamples groups); ``system``: who wrote it; ``half``: the data subset reported on its own;
    ``item``: a :class:`crsbench.judge.JudgeInput`; ``labels``: aspect -> mean human rating;
    ``n_turns``: turns of the conversation up to and including the unit."""

    key: tuple
    group: str
    system: str
    half: str
    item: Any
    labels: dict
    n_turns: int


@dataclass(frozen=True)
class BenchmarkData:
    """Loaded data: a name, the sha256 of the data file, and the units per level."""

    name: str
    sha256: str
    units: dict  # level ("turn"/"dialogue") -> list[Unit]


@dataclass(frozen=True)
class JudgeBenchmark:
    """A registered judge benchmark. ``load(path_or_None)`` -> :class:`BenchmarkData` (None:
    the bundled data); ``read_run(path)`` -> ``{unit key: {aspect: prediction}}``;
    ``published(path_or_None)`` -> ``{half: {evaluator: {aspect: {pearson, spearman}}}}``;
    ``rubrics``/``aspects``: per level; ``default_run``: a bundled run file, if any."""

    name: str
    description: str
    rubrics: dict
    aspects: dict
    load: Callable
    read_run: Callable
    published: Callable
    default_run: str | None = None
    citation: str = ""
    extra: dict = field(default_factory=dict)

    def level_of(self, rubric: str) -> str:
        for level, name in self.rubrics.items():
            if name == rubric:
                return level
        raise UserError(f"benchmark {self.name!r} has no level rated with rubric {rubric!r} "
                        f"(its rubrics: {', '.join(self.rubrics.values())})")


def get_benchmark(name: str | None = None) -> JudgeBenchmark:
    """A registered benchmark by name; None: the only one registered."""
    from crsbench.plugins import get_registry

    registry = get_registry()
    found = registry.judge_benchmarks()
    if name is None:
        if len(found) != 1:
            raise UserError(f"choose a judge benchmark with --benchmark (registered: {', '.join(sorted(found)) or 'none'})")
        name = next(iter(found))
    if name not in found:
        raise UserError(f"unknown judge benchmark {name!r} (known: {', '.join(sorted(found)) or 'none'})")
    return registry.use("judge_benchmarks", name).obj
