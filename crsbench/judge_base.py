"""What a judge is: one pair to score (:class:`JudgeInput`), its scores or error
(:class:`JudgeScore`), the digests and ids that key scores and leaderboard columns, the base
class :class:`Judge` of judge plugins, and :func:`summarize`.

Imported by plugins at registration time, so it stays light: only the standard library.
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Sequence

from crsbench.errors import UserError
from crsbench.rubric import Rubric, resolve_rubric

SCORE_MIN = 0
SCORE_MAX = 9


# -- inputs and outputs -----------------------------------------------------------------------
@dataclass(frozen=True)
class JudgeInput:
    """One pair to judge. ``context``: the dialogue turns before the reply, oldest first.
    ``roles`` (optional, one per turn: "seeker"/"user" or "recommender"/"system"); without
    it the turns are assumed to alternate and the last one to be the user's."""

    context: list[str]
    response: str
    roles: list[str] | None = None

    def canonical(self) -> dict:
        return {"context": [str(t) for t in self.context], "response": str(self.response),
                "roles": None if self.roles is None else [str(r) for r in self.roles]}


@dataclass
class JudgeScore:
    """``scores``: metric -> score in [0, 9]; ``None`` when judging failed (see ``error``)."""

    scores: dict[str, float] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.scores is not None and self.error is None


def input_digest(item: JudgeInput, settings: dict | None = None) -> str:
    """sha256 of the input (and of the judge settings that change its scores)."""
    payload = {"input": item.canonical(), "settings": settings or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False,
                                     separators=(",", ":")).encode()).hexdigest()


def settings_digest(settings: dict | None) -> str:
    """8 hex digits of sha256 over the settings that change a judge's scores."""
    text = json.dumps(settings or {}, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def judge_id(model_id: str, settings: dict | None) -> str:
    """A judge's recorded id: its model, plus ``~<settings digest>`` when it has settings, so
    the same model judging with other settings (chat template, dtype, ...) never shares a
    key, a comparison or a leaderboard column with it."""
    return f"{model_id}~{settings_digest(settings)}" if settings else model_id


def metric_key(model_id: str, metric: str, rubric_version: str) -> str:
    """The result/leaderboard key of one judge metric (``model_id``: the judge id)."""
    return f"judge/{model_id}/{rubric_version}/{metric}"


def check_score(value: Any) -> float:
    """A number in [0, 9] (bools, NaN and out-of-range values raise ``ValueError``)."""
    if isinstance(value, bool):
        raise ValueError(f"not a score: {value!r}")
    number = float(value)
    if math.isnan(number) or not SCORE_MIN <= number <= SCORE_MAX:
        raise ValueError(f"score {value!r} is outside {SCORE_MIN}-{SCORE_MAX}")
    return number


# -- the base class ---------------------------------------------------------------------------
class Judge:
    """Scores (context, response) pairs on the metrics of its rubric, 0-9. Subclasses set
    ``name`` (and ``description``), implement :meth:`score` and :attr:`model_id`, and, when
    options change the scores (context length, temperature, ...), return them from
    :meth:`settings` so cached scores are not mixed up. Prompts come from :attr:`rubric`.

    ``rubric``: a :class:`~crsbench.rubric.Rubric`, the name of a registered one, or None
    (the only registered rubric; an error when several are registered). Resolved on first use.

    A judge must not load its model in ``__init__`` or at import time: ``model_id`` and the
    cache are consulted first, so a fully cached run never loads it."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, rubric: Rubric | str | None = None, **options):
        self.options = options
        self._rubric = rubric
        self._rubric_version: str | None = None
        self._counts: Counter = Counter()
        self._lock = threading.Lock()

    @property
    def rubric(self) -> Rubric:
        if not isinstance(self._rubric, Rubric):
            self._rubric = resolve_rubric(self._rubric)
        return self._rubric

    @property
    def rubric_version(self) -> str:
        """The rubric's name (its versioned id); settable to tell scores apart (tests)."""
        return self._rubric_version or self.rubric.name

    @rubric_version.setter
    def rubric_version(self, value: str) -> None:
        self._rubric_version = value

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.rubric.metrics

    @property
    def max_turns(self) -> int:
        """Context turns shown to the judge: option ``max_context_turns``, else the rubric's."""
        return int(self.options.get("max_context_turns", self.rubric.max_turns))

    @property
    def max_turn_chars(self) -> int:
        """Characters per turn before it is cut: option ``max_turn_chars``, else the rubric's."""
        return int(self.options.get("max_turn_chars", self.rubric.max_turn_chars))

    @property
    def model_id(self) -> str:
        """The judge model (hub id, file name or API model name), recorded with its scores."""
        raise NotImplementedError

    def settings(self) -> dict:
        """Options that change the scores; hashed into cache keys. Default: none."""
        return {}

    def score(self, items: list[JudgeInput]) -> list[JudgeScore]:
        """One :class:`JudgeScore` per item, in order. A pair that cannot be judged gets
        ``JudgeScore(None, error)``; only a broken setup (bad options) raises."""
        raise NotImplementedError

    # -- bookkeeping ---------------------------------------------------------------------
    def count(self, key: str, n: int | float = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def stats(self) -> dict[str, float]:
        """Counters such as ``parse_failures``, ``errors``, ``retries``, ``cache_hits``."""
        with self._lock:
            return dict(self._counts)

    @property
    def judge_id(self) -> str:
        """The model id plus a digest of :meth:`settings` (see :func:`judge_id`)."""
        return judge_id(self.model_id, self.settings())

    @property
    def key(self) -> str:
        """``<judge id>/<rubric>``: the group of this judge's scores in records and results."""
        return f"{self.judge_id}/{self.rubric_version}"

    def describe(self) -> dict:
        """What to record next to the scores of a run."""
        settings = self.settings()
        return {"judge": self.name, "model": self.model_id, "id": judge_id(self.model_id, settings),
                "rubric_version": self.rubric_version, "metrics": list(self.metrics), "settings": settings,
                "settings_digest": settings_digest(settings)}

    def metric_key(self, metric: str) -> str:
        return metric_key(self.judge_id, metric, self.rubric_version)

    def check_options(self, known: Iterable[str]) -> None:
        extra = sorted(set(self.options) - set(known) - {"rubric"})
        if extra:
            raise UserError(f"judge {self.name!r}: unknown option(s) {', '.join(map(repr, extra))} "
                            f"(known: {', '.join(sorted(known)) or 'none'})")


def summarize(judge: Judge, results: Sequence[JudgeScore]) -> dict[str, dict]:
    """Per-metric mean over the judged pairs, under the judge's metric keys:
    ``{"judge/<model>/<rubric>/<metric>": {"value": mean, "n": judged, "failed": failed}}``."""
    out = {}
    for metric in judge.metrics:
        values = [r.scores[metric] for r in results if r.ok and metric in r.scores]
        out[judge.metric_key(metric)] = {"value": sum(values) / len(values) if values else None,
                                         "n": len(values), "failed": len(results) - len(values)}
    return out
