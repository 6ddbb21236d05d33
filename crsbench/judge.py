"""LLM judges: score a (dialogue context, response) pair on the metrics of a rubric.

What a judge is asked is a :class:`crsbench.rubric.Rubric`: a registered, versioned object
(the ``register_rubrics`` hook; ECR's five subjective metrics are the ``judges`` plugin's
``ecr-subjective-v1``). A judge takes the rubric as its ``rubric`` option (a name or an
object); a run passes its task's ``default_rubric`` unless told otherwise. Every result
records the judge's model id and the rubric's name, and scores of different judges or
rubrics never share a leaderboard column (``judge/<judge-id>/<rubric name>/<metric>``; the
judge id is the model id plus ``~`` and a digest of the settings that change its scores).

This module is imported by plugins at registration time, so it stays light: only the
standard library. Backends (transformers, an OpenAI-compatible endpoint) live in
``crsbench_plugins.judges``.

Pieces:

- :class:`JudgeInput`, :class:`JudgeScore`: one pair to score, and its scores or error;
- :class:`Judge`: the base class of judge plugins;
- :class:`JudgeCache` + :class:`CachedJudge`: an SQLite cache so a pair is scored once per
  (judge model, rubric, metric, input);
- :class:`MeanJudge`: the per-metric mean of several judges.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
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


# -- the cache --------------------------------------------------------------------------------
def default_cache_path() -> Path:
    root = os.environ.get("CRSBENCH_CACHE_DIR") or Path.home() / ".cache" / "crsbench"
    return Path(root) / "judges.sqlite"


class JudgeCache:
    """Judge scores on disk (SQLite, WAL), keyed by (model id, rubric version, metric,
    sha256 of the input). Several processes may read while one writes; writers wait on each
    other (``busy_timeout``). One connection per instance, shared by its threads."""

    SCHEMA_VERSION = 1
    _CHUNK = 400  # digests per SELECT (SQLite limits bound parameters)

    def __init__(self, path: str | os.PathLike | None = None, timeout: float = 30.0):
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise UserError(f"judge cache {self.path}: cannot switch to WAL mode (got {mode!r})")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS judge_scores ("
            " model_id TEXT NOT NULL, rubric_version TEXT NOT NULL, metric TEXT NOT NULL,"
            " input_sha256 TEXT NOT NULL, score REAL NOT NULL, created REAL NOT NULL,"
            " PRIMARY KEY (model_id, rubric_version, metric, input_sha256)) WITHOUT ROWID")
        self._db.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")

    def get_many(self, model_id: str, rubric_version: str, digests: Sequence[str],
                 metrics: Sequence[str]) -> dict[tuple[str, str], float]:
        """(digest, metric) -> score for every cached combination."""
        found: dict[tuple[str, str], float] = {}
        unique = list(dict.fromkeys(digests))
        wanted = set(metrics)
        with self._lock:
            for i in range(0, len(unique), self._CHUNK):
                chunk = unique[i:i + self._CHUNK]
                rows = self._db.execute(
                    "SELECT input_sha256, metric, score FROM judge_scores WHERE model_id = ? AND "
                    f"rubric_version = ? AND input_sha256 IN ({','.join('?' * len(chunk))})",
                    (model_id, rubric_version, *chunk)).fetchall()
                found.update(((d, m), s) for d, m, s in rows if m in wanted)
        return found

    def put_many(self, model_id: str, rubric_version: str, rows: Iterable[tuple[str, str, float]]) -> int:
        """Store (digest, metric, score) rows in one transaction; returns how many."""
        now = time.time()
        data = [(model_id, rubric_version, m, d, float(s), now) for d, m, s in rows]
        if not data:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO judge_scores VALUES (?, ?, ?, ?, ?, ?)", data)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(data)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM judge_scores").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CachedJudge(Judge):
    """Wraps a judge: pairs whose five scores are all cached are answered from the cache,
    only the rest (deduplicated) go to the judge; its successful scores are stored, its
    failures are not (they are retried next time). ``stats()`` adds ``cache_hits`` and
    ``cache_misses`` (pairs) to the wrapped judge's counters."""

    def __init__(self, judge: Judge, cache: JudgeCache | str | os.PathLike | None = None):
        super().__init__()
        self.judge = judge
        self.cache = cache if isinstance(cache, JudgeCache) else JudgeCache(cache)
        self.name = judge.name
        self.description = judge.description

    @property
    def rubric(self) -> Rubric:
        return self.judge.rubric

    @property
    def rubric_version(self) -> str:
        return self.judge.rubric_version

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.judge.metrics

    @property
    def model_id(self) -> str:
        return self.judge.model_id

    def settings(self) -> dict:
        return self.judge.settings()

    def score(self, items: list[JudgeInput]) -> list[JudgeScore]:
        items = list(items)
        settings = self.judge.settings()
        digests = [input_digest(item, settings) for item in items]
        cached = self.cache.get_many(self.model_id, self.rubric_version, digests, self.metrics)
        results: list[JudgeScore | None] = [None] * len(items)
        todo: dict[str, int] = {}  # digest -> index of the first item with it
        for i, digest in enumerate(digests):
            if all((digest, m) in cached for m in self.metrics):
                results[i] = JudgeScore({m: cached[(digest, m)] for m in self.metrics})
                self.count("cache_hits")
            else:
                self.count("cache_misses")
                todo.setdefault(digest, i)
        if todo:
            fresh = self.judge.score([items[i] for i in todo.values()])
            if len(fresh) != len(todo):
                raise RuntimeError(f"judge {self.name!r} returned {len(fresh)} scores for {len(todo)} inputs")
            by_digest = dict(zip(todo, fresh))
            self.cache.put_many(self.model_id, self.rubric_version,
                                [(d, m, s.scores[m]) for d, s in by_digest.items() if s.ok
                                 for m in self.metrics if m in s.scores])
            for i, digest in enumerate(digests):
                if results[i] is None:
                    results[i] = by_digest[digest]
        return results  # type: ignore[return-value]

    def stats(self) -> dict[str, float]:
        return {**self.judge.stats(), **super().stats()}


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
