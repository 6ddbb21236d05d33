"""Judge validation records: building one, writing, reading and checking record files,
finding a judge's record, and printing a record as a plain-text table."""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from crsbench.errors import UserError
from crsbench.judge_benchmark import (CI_LEVEL, LEVELS, RESULTS_SUBDIR, SCHEMA, VALIDATION_PATH_ENV,
                                      BenchmarkData, JudgeBenchmark)


def git_commit() -> str | None:
    from crsbench.results import git_state

    return git_state().get("commit")


def crsbench_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("crsbench")
    except metadata.PackageNotFoundError:
        return None


def make_record(*, benchmark: JudgeBenchmark, data: BenchmarkData, half: str, judge: dict, judge_id: str,
                rubric: str, levels: Sequence[str], aspects: dict, trivial: dict, split: str = "all",
                limit: int | None = None, n_bootstrap: int = 1000, seed: int = 0, extra: dict | None = None,
                published: dict | None = None) -> dict:
    """A validation record (the schema B's learned judges write too; see docs/judges.md)."""
    units = data.units
    record = {
        "schema": SCHEMA,
        "benchmark": benchmark.name,
        "judge": judge,
        "judge_id": judge_id,
        "rubric": rubric,
        "levels": list(levels),
        "data": {"name": data.name, "half": half, "sha256": data.sha256, "limit": limit,
                 "n_turns": sum(1 for u in units.get("turn", []) if u.half == half),
                 "n_dialogues": sum(1 for u in units.get("dialogue", []) if u.half == half),
                 "n_conversations": len({u.group for lv in units.values() for u in lv if u.half == half})},
        "split": split,
        "aspects": aspects,
        "aspect_order": list(aspects),  # the benchmark's order (the file's keys are sorted)
        "trivial": trivial,
        "published": published or {},
        "bootstrap": {"n": n_bootstrap, "seed": seed, "ci_level": CI_LEVEL, "resampling": "conversations",
                      "within_system": "mean over systems of the per-system Spearman"},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "crsbench_version": crsbench_version(),
        "git_commit": git_commit(),
    }
    if extra:
        record.update(extra)
    return record


def published_agreement(benchmark: JudgeBenchmark, half: str, aspects: Sequence[str]) -> dict:
    table = (benchmark.published(None) or {}).get(half) or {}
    return {name: {a: v for a, v in rows.items() if a in aspects} for name, rows in table.items()}


# -- record files ------------------------------------------------------------------------------
def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-.") or "none"


def record_filename(record: dict) -> str:
    """``<safe judge id>__<rubric>__<half>.json``"""
    return f"{safe_name(record['judge_id'])}__{safe_name(record['rubric'])}__{safe_name(record['data']['half'])}.json"


def write_validation(record: dict, path: str | os.PathLike) -> Path:
    """Write a record atomically (checked first); returns the path."""
    from crsbench.results import write_json_atomic

    check_record(record, path)
    write_json_atomic(Path(path), record)
    return Path(path)


def check_record(record: Any, path: Any = "record") -> dict:
    """The keys every reader relies on; a UserError naming what is missing."""
    if not isinstance(record, dict):
        raise UserError(f"{path}: a validation record is a JSON object")
    for key in ("schema", "judge", "judge_id", "rubric", "data", "split", "aspects", "trivial"):
        if key not in record:
            raise UserError(f"{path}: not a judge validation record (missing {key!r})")
    if not str(record["schema"]).startswith("crsbench-judge-validation/"):
        raise UserError(f"{path}: unknown validation record schema {record['schema']!r}")
    if not isinstance(record["data"], dict) or "half" not in record["data"]:
        raise UserError(f"{path}: validation record data lacks 'half'")
    if not isinstance(record["aspects"], dict):
        raise UserError(f"{path}: validation record aspects must be an object")
    return record


def read_validation(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such validation record") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    return check_record(record, path)


def search_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Where records are looked for: ``$CRSBENCH_JUDGE_VALIDATION_PATH`` (os.pathsep-separated),
    ``<root>/results/judges`` (default ``leaderboards/``, then the source checkout's), and the
    ``data/validation/`` folder of every loaded plugin's package (records shipped with a judge)."""
    dirs = [Path(p) for p in os.environ.get(VALIDATION_PATH_ENV, "").split(os.pathsep) if p]
    dirs.append(Path(root or "leaderboards") / RESULTS_SUBDIR)
    dirs.append(Path(__file__).resolve().parent.parent / "leaderboards" / RESULTS_SUBDIR)
    try:
        from crsbench.plugins import get_registry

        for info in get_registry().plugins.values():
            module = info.module.split(":")[0]
            spec = _find_spec(module)
            if spec is not None and spec.origin:
                dirs.append(Path(spec.origin).parent / "data" / "validation")
    except Exception:  # noqa: BLE001 - a broken plugin must not hide the other records
        pass
    out: list[Path] = []
    for d in dirs:
        resolved = d.resolve()
        if resolved not in out and resolved.is_dir():
            out.append(resolved)
    return out


def _find_spec(module: str):
    import importlib.util

    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


def find_validation(judge_id: str, rubric: str, half: str | None = None,
                    root: str | os.PathLike | None = None) -> dict | None:
    """The validation record of a judge id and rubric (optionally of one data half), or None.
    Records of ``--limit`` runs count only when there is no complete one. Each record found
    gets a private ``_path``."""
    partial = None
    for directory in search_dirs(root):
        for path in sorted(directory.glob("*.json")):
            try:
                record = read_validation(path)
            except UserError:
                continue
            if record["judge_id"] != judge_id or record["rubric"] != rubric:
                continue
            if half is not None and record["data"].get("half") != half:
                continue
            record["_path"] = str(path)
            if record["data"].get("limit") is None:
                return record
            partial = partial or record
    return partial


def load_records(root: str | os.PathLike) -> list[dict]:
    """Every record under ``<root>/results/judges/`` (the leaderboard's), each with ``_file``."""
    base = Path(root) / RESULTS_SUBDIR
    out = []
    for path in sorted(base.glob("*.json")) if base.is_dir() else []:
        record = read_validation(path)
        record["_file"] = path.name
        out.append(record)
    return out


# -- printing ----------------------------------------------------------------------------------
def format_estimate(value, ci=None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    return text + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def summary_lines(record: dict) -> list[str]:
    """A plain-text table of a record: the judge, the trivial predictors, the published rows."""
    data = record["data"]
    levels = record.get("levels") or list(LEVELS)
    counts = ", ".join(f"{data.get(f'n_{lv}s')} {lv}s" for lv in levels if f"n_{lv}s" in data)
    lines = [f"{record['judge_id']} · rubric {record['rubric']} · {record.get('benchmark', '?')} half "
             f"{data['half']} ({counts}"
             f"{', a sample of ' + str(data['limit']) + ' units per level (--limit)' if data.get('limit') else ''})"]
    header = f"  {'aspect':<18} {'predictor':<26} {'Spearman pooled [95% CI]':<26} {'within system [95% CI]':<26} Pearson     n"
    lines.append(header)
    for aspect, stats in record["aspects"].items():
        rows = [("judge", stats)] + [(name, per[aspect]) for name, per in record["trivial"].items() if aspect in per]
        for name, s in rows:
            lines.append(f"  {aspect:<18} {name:<26} {format_estimate(s.get('spearman'), s.get('spearman_ci')):<26} "
                         f"{format_estimate(s.get('within_system_spearman'), s.get('within_system_spearman_ci')):<26} "
                         f"{format_estimate(s.get('pearson')):<11} {s.get('n')}")
        for name, per in (record.get("published") or {}).items():
            p = per.get(aspect) or {}
            if p.get("spearman") is not None:
                lines.append(f"  {aspect:<18} {name + ' (published)':<26} {format_estimate(p.get('spearman')):<26} "
                             f"{'n/a':<26} {format_estimate(p.get('pearson')):<11}")
    return lines
