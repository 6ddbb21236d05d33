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

CONFIG_FILE = "config.json"
PREDICTIONS_FILE = "predictions.jsonl"
ITEM_NAMES_FILE = "item_names.json"


def write_jsonl_atomic(path: Path, rows) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
