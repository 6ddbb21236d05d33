"""Reading a leaderboard's stored files: ``results/<task>/*.json`` and ``reported/*.json``,
each checked for what a table row needs, and the key that decides which rows share a table."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from crsbench.errors import UserError
from crsbench.leaderboard_format import SHA_CHARS
from crsbench.results import read_result

DEFAULT_ROOT = "leaderboards"
RESULTS_DIR = "results"
REPORTED_DIR = "reported"
GENERATION = "generation"
JUDGE = "judge"
JUDGES_DIR = "judges"  # results/judges/: judge validation records, tabled in judges.md
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# -- reading ---------------------------------------------------------------------------
def load_results(root: Path | str) -> list[dict]:
    """Every ``results/<task>/*.json`` under root, upgraded by ``read_result``.

    Each document gets a private ``_run`` entry (its file name). A file that
    cannot be read, or lacks what a leaderboard row needs, is a UserError naming it.
    """
    base = Path(root) / RESULTS_DIR
    out = []
    for path in sorted(base.rglob("*.json")) if base.is_dir() else []:
        rel = path.relative_to(base)
        if rel.parts[0] == JUDGES_DIR:  # judge validation records: crsbench.judge_leaderboard
            continue
        if len(rel.parts) != 2:
            raise UserError(f"{path}: result files must sit at {base}/<task>/<file>.json")
        result = read_result(path)
        check_result(result, path)
        if result["task"]["name"] != rel.parts[0]:
            raise UserError(f"{path}: result of task {result['task']['name']!r} filed under "
                            f"{rel.parts[0]!r}")
        result["_run"] = path.name
        out.append(result)
    return out


def check_result(result: dict, path: Path) -> None:
    """The fields a leaderboard row needs; failing loudly beats a half-empty row."""
    def need(obj, *keys):
        for key in keys:
            if not isinstance(obj, dict) or key not in obj:
                raise UserError(f"{path}: not a usable result file (missing {'.'.join(keys)})")
            obj = obj[key]
        return obj

    for keys in (("task", "name"), ("task", "version"), ("task", "data", "variant"),
                 ("model", "name"), ("seeds", "run"), ("metrics",)):
        need(result, *keys)
    if not _SAFE_NAME.match(str(result["task"]["name"])):
        raise UserError(f"{path}: task name {result['task']['name']!r} cannot name a file")
    if not isinstance(result["metrics"], dict):
        raise UserError(f"{path}: metrics must be an object")
    for key, cell in result["metrics"].items():
        split_key(key, path)
        if not isinstance(cell, dict) or "value" not in cell:
            raise UserError(f"{path}: metric {key!r} has no value")
        for field in ("value", "ci_low", "ci_high", "n"):
            value = cell.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise UserError(f"{path}: metric {key!r}: {field} is {value!r}, not a number or null")
    for keys in (("evaluation",), ("evaluation", "n_targets"), ("plugins",), ("plugins", "model"),
                 ("task", "data")):
        obj = result
        for key in keys:
            obj = obj.get(key) if isinstance(obj, dict) else None
        if obj is not None and not isinstance(obj, dict):
            raise UserError(f"{path}: not a usable result file ({'.'.join(keys)} is not an object)")


def split_key(key: str, path: Any = "") -> tuple[str, str]:
    """'standard/recall@10' -> ('standard', 'recall@10');
    'judge/<judge id>/<rubric>/<metric>' -> ('judge/<judge id>/<rubric>', '<metric>').
    The judge id may itself contain slashes (model repo ids), so split from the right."""
    parts = key.split("/")
    if parts[0] == JUDGE:
        if len(parts) < 4 or not all(parts):
            raise UserError(f"{path}: judge metric {key!r} is not judge/<judge-id>/<rubric>/<metric>")
        return "/".join(parts[:-1]), parts[-1]
    if len(parts) != 2 or not all(parts):
        raise UserError(f"{path}: metric key {key!r} is not <protocol>/<metric>")
    return parts[0], parts[1]


def load_reported(root: Path | str) -> list[dict]:
    """Every ``reported/*.json``, checked; each gets a private ``_file`` entry."""
    base = Path(root) / REPORTED_DIR
    out = []
    for path in sorted(base.glob("*.json")) if base.is_dir() else []:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc})") from None
        check_reported(doc, path)
        doc["_file"] = path.name
        out.append(doc)
    return out


def check_reported(doc: Any, path: Path) -> None:
    if not isinstance(doc, dict):
        raise UserError(f"{path}: a reported file is one JSON object")
    for key in ("source", "task", "data_variant", "protocol", "rows"):
        if key not in doc:
            raise UserError(f"{path}: reported file lacks {key!r}")
    if not _SAFE_NAME.match(str(doc["task"])):
        raise UserError(f"{path}: task name {doc['task']!r} cannot name a file")
    for i, row in enumerate(doc["rows"]):
        if not isinstance(row, dict) or "model" not in row or not isinstance(row.get("metrics"), dict):
            raise UserError(f"{path}: rows[{i}] needs 'model' and a 'metrics' object")
        for name, value in row["metrics"].items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise UserError(f"{path}: rows[{i}].metrics.{name} is not a number")


# -- grouping --------------------------------------------------------------------------
def group_key(result: dict) -> tuple[str, str, str, str, str, str]:
    """(task, version, data variant, short sha256, split, limit): rows are comparable only
    within one. A --limit run saw a subset of the split, so it never joins full runs."""
    task = result["task"]
    data = task.get("data") or {}
    evaluation = result.get("evaluation") or {}
    sha = str(data.get("sha256") or "")[:SHA_CHARS] or "unknown"
    split = str(evaluation.get("split") or "unknown")
    limit = "" if evaluation.get("limit") is None else str(evaluation["limit"])
    return str(task["name"]), str(task["version"]), str(data["variant"]), sha, split, limit


def row_sort_key(result: dict) -> tuple:
    model = result["model"]
    return (str(model["name"]), str(model.get("version") or ""), str(model.get("profile") or ""),
            run_seed(result), result["_run"])


def run_seed(result: dict) -> int | str:
    seed = result["seeds"]["run"]
    return seed if isinstance(seed, int) else str(seed)
