"""Run directories: what a run writes and how commands find it again.

A run directory holds config.json, log.txt, checkpoints/, predictions.jsonl,
item_names.json and result.json.
"""
from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

from crsbench.errors import UserError
from crsbench.results import DISK_FULL_ERRNOS, disk_full_error

CONFIG_FILE = "config.json"
PREDICTIONS_FILE = "predictions.jsonl"
PARTIAL_PREDICTIONS_FILE = "predictions.partial.jsonl"  # finished batches, while predicting
ITEM_NAMES_FILE = "item_names.json"


def write_jsonl_atomic(path: Path, rows) -> None:
    """Temp file in the same directory, flushed to disk, then renamed: a crash or a full
    disk leaves the previous file as it was (and no temp file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(path, exc) from None
        raise


class RunLock:
    """An exclusive lock on a run directory, so two runs never write into one.

    The lock is ``flock`` on ``<parent>/.<run name>.lock`` (beside the directory, so
    ``--fresh`` can delete the directory while holding it); the kernel releases it when the
    process ends, however it ends, so a rerun after a kill is never blocked. A second
    process gets a UserError naming the holder's pid."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir.parent / f".{self.run_dir.name}.lock"
        self._fh = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise UserError(f"another crsbench run (pid {holder}) is using {self.run_dir}; "
                            "wait for it to finish or pass --output-dir to run elsewhere") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file drops the flock
            self._fh = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def read_jsonl(path: Path) -> list[dict]:
    """Read JSON lines; a malformed line is a user-facing error naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    return rows


def require_run_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"no such run directory: {path}")
    for name in (CONFIG_FILE, PREDICTIONS_FILE):
        if not (path / name).is_file():
            raise UserError(f"{path} is not a complete run directory (missing {name})")
    return path


def read_config(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{run_dir}/{CONFIG_FILE}: not valid JSON ({exc.msg})") from None
