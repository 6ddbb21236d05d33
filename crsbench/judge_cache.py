"""The judge score cache: :class:`JudgeCache` (SQLite, WAL) and :class:`CachedJudge`, which
wraps a judge so a pair is scored once per (judge model, rubric, metric, input). Standard library only."""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

from crsbench.errors import UserError
from crsbench.judge_base import Judge, JudgeInput, JudgeScore, input_digest
from crsbench.rubric import Rubric


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
