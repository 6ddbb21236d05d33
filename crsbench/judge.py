"""LLM judges: score a (dialogue context, response) pair on ECR's five subjective metrics.

The five metrics of ECR (Zhang et al., "Towards Empathetic Conversational Recommender
Systems", RecSys 2024) are scored on a 0-9 scale by a judge: ``emotional_intensity``,
``emotional_persuasiveness``, ``logical_persuasiveness``, ``informativeness`` and
``lifelikeness``. The rubric below is our own wording (docs/judges.md); every result records
the judge's model id and the rubric version, and scores of different judges or rubric
versions never share a leaderboard column (``judge/<judge-id>/<rubric-version>/<metric>``).

This module is imported by plugins at registration time, so it stays light: only the
standard library. Backends (transformers, an OpenAI-compatible endpoint) live in
``crsbench_plugins.judges``.

Pieces:

- :class:`JudgeInput`, :class:`JudgeScore`: one pair to score, and its scores or error;
- :class:`Judge`: the base class of judge plugins;
- :func:`build_prompt` / :func:`prompt_parts`: the versioned prompt (``RUBRIC_VERSION``);
- :class:`JudgeCache` + :class:`CachedJudge`: an SQLite cache so a pair is scored once per
  (judge model, rubric version, metric, input);
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

METRICS: tuple[str, ...] = (
    "emotional_intensity",
    "emotional_persuasiveness",
    "logical_persuasiveness",
    "informativeness",
    "lifelikeness",
)
SCORE_MIN = 0
SCORE_MAX = 9

# -- the rubric ------------------------------------------------------------------------------
# Changing ANY text below changes what judges are asked, so it needs a new RUBRIC_VERSION
# (cached scores and leaderboard columns are keyed by it) and a new RUBRIC_FINGERPRINT;
# tests/test_judges.py fails until both are updated.
RUBRIC_VERSION = "ecr-subjective-v1"
RUBRIC_FINGERPRINT = "b3416a64828ff4ec"  # rubric_fingerprint() of the texts below

SYSTEM_PROMPT = ("You are a careful annotator. You rate replies of a movie recommender chatbot "
                 "and answer exactly in the format you are asked for.")

# metric -> (title, definition used in the rubric, anchors 0 / 5 / 9)
RUBRIC: dict[str, tuple[str, str, tuple[str, str, str]]] = {
    "emotional_intensity": (
        "emotional intensity",
        "how strongly the reply expresses feelings such as excitement, enthusiasm, warmth or sympathy",
        ("flat and neutral, no feeling at all",
         "some mild feeling, e.g. \"I liked it\"",
         "vivid, strong feeling throughout the reply"),
    ),
    "emotional_persuasiveness": (
        "emotional persuasiveness",
        "how much the reply would make the user want to watch the recommended movie by appealing "
        "to the user's feelings, tastes or experiences",
        ("no appeal to the user's feelings",
         "a generic appeal that would fit any user",
         "a warm, personal appeal tailored to what this user said"),
    ),
    "logical_persuasiveness": (
        "logical persuasiveness",
        "how well the reply gives sound reasons why the recommendation fits what the user asked "
        "for (genre, actors, plot, similar movies)",
        ("no reason, or the reply ignores or contradicts the user's request",
         "a vague or generic reason",
         "specific, coherent reasons that clearly match the user's request"),
    ),
    "informativeness": (
        "informativeness",
        "how much concrete, relevant information about the recommended movies the reply gives "
        "(plot, cast, genre, year, what makes the movie special)",
        ("no information at all",
         "a title with one detail",
         "several specific, relevant details"),
    ),
    "lifelikeness": (
        "lifelikeness",
        "how natural, fluent and human the reply sounds, like a friendly movie fan talking",
        ("broken, robotic or nonsensical",
         "understandable but stiff or templated",
         "fluent, natural and engaging"),
    ),
}

RUBRIC_INTRO = (
    "You will read a conversation between a user and a movie recommender chatbot, followed by "
    "the chatbot's next reply. Rate that reply on a scale from 0 (not at all) to 9 (extremely), "
    "judging only the reply, in the light of the conversation so far. The five qualities are:"
)
RUBRIC_OUTRO = ("Judge each quality on its own: a short reply can be lifelike without being "
                "informative. Do not reward length for its own sake.")
ANSWER_PREFIX = "Score (0-9):"
METRIC_QUESTION = "Question: rate the {title} of the reply from 0 to 9. Answer with a single digit."
ALL_METRICS_QUESTION = (
    "Rate the reply on all five qualities. Answer with only a JSON object with the keys {keys}, "
    "each an integer from 0 to 9, and nothing else."
)
USER_LABEL = "User"
SYSTEM_LABEL = "Recommender"
EMPTY_REPLY = "(empty reply)"
DEFAULT_MAX_TURNS = 6         # the last turns of the context shown to the judge
DEFAULT_MAX_TURN_CHARS = 600  # longer turns are cut (with "...")


def _rubric_text() -> str:
    lines = [RUBRIC_INTRO, ""]
    for i, metric in enumerate(METRICS, 1):
        title, definition, (low, mid, high) = RUBRIC[metric]
        lines.append(f"{i}. {title.capitalize()} ({metric}): {definition}. "
                     f"0 = {low}; 5 = {mid}; 9 = {high}.")
    lines += ["", RUBRIC_OUTRO]
    return "\n".join(lines)


RUBRIC_TEXT = _rubric_text()


def rubric_fingerprint() -> str:
    """A short sha256 of every text a judge is shown (pinned as ``RUBRIC_FINGERPRINT``)."""
    parts = [RUBRIC_VERSION, SYSTEM_PROMPT, RUBRIC_TEXT, ANSWER_PREFIX, METRIC_QUESTION,
             ALL_METRICS_QUESTION, USER_LABEL, SYSTEM_LABEL, EMPTY_REPLY,
             str(DEFAULT_MAX_TURNS), str(DEFAULT_MAX_TURN_CHARS)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


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


def _speaker(role: str | None, turns_from_end: int) -> str:
    if role is not None:
        r = role.lower()
        if r in ("seeker", "user", "human"):
            return USER_LABEL
        if r in ("recommender", "system", "assistant", "bot"):
            return SYSTEM_LABEL
    return USER_LABEL if turns_from_end % 2 == 1 else SYSTEM_LABEL


def _cut(text: str, max_chars: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= max_chars else text[:max_chars].rstrip() + "..."


def format_context(context: Sequence[str], roles: Sequence[str] | None = None,
                   max_turns: int = DEFAULT_MAX_TURNS, max_turn_chars: int = DEFAULT_MAX_TURN_CHARS) -> str:
    """The last ``max_turns`` turns as ``User: ...`` / ``Recommender: ...`` lines."""
    n = len(context)
    if roles is not None and len(roles) != n:
        raise ValueError(f"{len(roles)} roles for {n} context turns")
    start = max(0, n - max_turns) if max_turns > 0 else n
    lines = [] if start == 0 else ["(earlier turns omitted)"]
    for i in range(start, n):
        role = roles[i] if roles is not None else None
        lines.append(f"{_speaker(role, n - i)}: {_cut(context[i], max_turn_chars)}")
    return "\n".join(lines) if lines else "(the conversation starts with the reply)"


def prompt_parts(context: Sequence[str], response: str, metric: str | None = None, *,
                 roles: Sequence[str] | None = None, max_turns: int = DEFAULT_MAX_TURNS,
                 max_turn_chars: int = DEFAULT_MAX_TURN_CHARS) -> tuple[str, str]:
    """``(shared, question)``: the rubric, conversation and reply (the same for every metric
    of one pair, so a local judge runs it once), and the question (one metric, or all five
    as a JSON object when ``metric`` is None). ``build_prompt`` is their concatenation."""
    if metric is not None and metric not in RUBRIC:
        raise ValueError(f"unknown judge metric {metric!r} (known: {', '.join(METRICS)})")
    reply = _cut(response, 4 * max_turn_chars) if str(response).strip() else EMPTY_REPLY
    shared = (f"{RUBRIC_TEXT}\n\nConversation:\n{format_context(context, roles, max_turns, max_turn_chars)}"
              f"\n\nReply to rate:\n{SYSTEM_LABEL}: {reply}\n\n")
    if metric is None:
        question = ALL_METRICS_QUESTION.format(keys=", ".join(f'"{m}"' for m in METRICS))
    else:
        question = METRIC_QUESTION.format(title=RUBRIC[metric][0])
    return shared, question


def build_prompt(context: Sequence[str], response: str, metric: str | None = None, **kwargs) -> str:
    """The user-message text asking to rate ``response`` on ``metric`` (a single digit is
    expected after :data:`ANSWER_PREFIX`), or on all metrics as JSON when ``metric`` is None."""
    shared, question = prompt_parts(context, response, metric, **kwargs)
    return shared + question


def metric_key(model_id: str, metric: str, rubric_version: str = RUBRIC_VERSION) -> str:
    """The result/leaderboard key of one judge metric."""
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
    """Scores (context, response) pairs on :data:`METRICS`, 0-9. Subclasses set ``name``
    (and ``description``), implement :meth:`score` and :attr:`model_id`, and, when options
    change the scores (context length, temperature, ...), return them from :meth:`settings`
    so cached scores are not mixed up.

    A judge must not load its model in ``__init__`` or at import time: ``model_id`` and the
    cache are consulted first, so a fully cached run never loads it."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    rubric_version: ClassVar[str] = RUBRIC_VERSION
    metrics: ClassVar[tuple[str, ...]] = METRICS

    def __init__(self, **options):
        self.options = options
        self._counts: Counter = Counter()
        self._lock = threading.Lock()

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

    def describe(self) -> dict:
        """What to record next to the scores of a run."""
        return {"judge": self.name, "model": self.model_id, "rubric_version": self.rubric_version,
                "metrics": list(self.metrics), "settings": self.settings()}

    def metric_key(self, metric: str) -> str:
        return metric_key(self.model_id, metric, self.rubric_version)

    def check_options(self, known: Iterable[str]) -> None:
        extra = sorted(set(self.options) - set(known))
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
                 metrics: Sequence[str] = METRICS) -> dict[tuple[str, str], float]:
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
        self.rubric_version = judge.rubric_version
        self.metrics = judge.metrics

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

    def __init__(self, judges: Sequence[Judge | dict | str] = (), **options):
        super().__init__(judges=judges, **options)
        self.check_options({"judges"})
        self.judges = [_resolve_judge(j) for j in judges]
        if not self.judges:
            raise UserError("judge 'mean': option judges must name at least one judge")
        versions = {j.rubric_version for j in self.judges}
        if len(versions) != 1:
            raise UserError(f"judge 'mean': its judges use different rubric versions {sorted(versions)}")
        self.rubric_version = versions.pop()

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


def _resolve_judge(spec: Judge | dict | str) -> Judge:
    if isinstance(spec, Judge):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise UserError(f"not a judge or judge spec: {spec!r}")
    from crsbench.plugins import get_registry

    options = dict(spec)
    name = options.pop("name")
    judges = get_registry().judges()
    if name not in judges:
        raise UserError(f"unknown judge {name!r} (known: {', '.join(sorted(judges)) or 'none'})")
    return get_registry().use("judges", name).obj(**options)
