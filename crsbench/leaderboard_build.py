"""Building, writing and checking the generated leaderboard files (``<task>.md``,
``<task>.csv`` and the judges' tables): a pure function of the stored files under the root."""
from __future__ import annotations

from pathlib import Path

from crsbench.leaderboard_format import CSV_FIELDS, MD_MARKER, MISSING, csv_text
from crsbench.leaderboard_load import (DEFAULT_ROOT, REPORTED_DIR, RESULTS_DIR, group_key, load_reported,
                                       load_results, row_sort_key, run_seed, split_key)
from crsbench.leaderboard_markdown import model_package, profile_label, task_markdown
from crsbench.provenance import unversioned


# -- CSV (long format: one line per run or reported row and metric) --------------------
def _csv_lines(results: list[dict], docs: list[dict]) -> list[dict]:
    lines = []
    for r in results:
        task, version, variant, sha, split, limit = group_key(r)
        model = r["model"]
        level = (r.get("evaluation") or {}).get("ci_level")
        for key, cell in r["metrics"].items():
            section, name = split_key(key)
            lines.append({"origin": "measured", "task": task, "task_version": version,
                          "data_variant": variant, "data_sha256": sha, "split": split, "limit": limit,
                          "section": section, "model": model["name"],
                          "model_version": model.get("version") or "",
                          "package": "" if model_package(r) == MISSING else model_package(r),
                          "profile": profile_label(r), "seed": run_seed(r),
                          "run": r["_run"], "metric": name, "value": cell.get("value"),
                          "ci_low": cell.get("ci_low"), "ci_high": cell.get("ci_high"),
                          "ci_level": level, "n": cell.get("n"), "source": ""})
    for doc in docs:
        for row in doc["rows"]:
            for name, value in row["metrics"].items():
                lines.append({"origin": "reported", "task": doc["task"], "task_version": "",
                              "data_variant": doc["data_variant"], "data_sha256": "", "split": "", "limit": "",
                              "section": doc["protocol"], "model": row["model"], "model_version": "",
                              "package": "", "profile": "", "seed": "", "run": f"{REPORTED_DIR}/{doc['_file']}",
                              "metric": name, "value": value, "ci_low": None, "ci_high": None,
                              "ci_level": None, "n": None, "source": doc["source"]})
    return lines


# -- build / write / check -------------------------------------------------------------
def build(root: Path | str = DEFAULT_ROOT) -> dict[Path, str]:
    """Path -> content of every generated file; a pure function of the files under root."""
    root = Path(root)
    results, reported = load_results(root), load_reported(root)
    tasks = sorted({r["task"]["name"] for r in results} | {d["task"] for d in reported})
    out = {}
    for task in tasks:
        mine = sorted((r for r in results if r["task"]["name"] == task), key=row_sort_key)
        docs = sorted((d for d in reported if d["task"] == task), key=lambda d: d["_file"])
        out[root / f"{task}.md"] = task_markdown(task, mine, docs)
        out[root / f"{task}.csv"] = csv_text(_csv_lines(mine, docs))
    from crsbench.judge_leaderboard import build_judges

    out.update(build_judges(root))
    return out


def _generated_on_disk(root: Path) -> set[Path]:
    """Top-level .md/.csv files this module wrote, recognised by their first line, so
    hand-written files (README.md) are never reported as extra or deleted."""
    header = ",".join(CSV_FIELDS)
    found = set()
    for path in [*root.glob("*.md"), *root.glob("*.csv")]:
        with path.open(encoding="utf-8", newline="") as fh:
            first = fh.readline().rstrip("\r\n")
        if first == (MD_MARKER if path.suffix == ".md" else header):
            found.add(path)
    return found


def write_text_atomic(path: Path, text: str) -> None:
    """Bytes exactly as given (LF endings), written with :func:`crsbench.results.atomic_write`."""
    from crsbench.results import atomic_write

    atomic_write(path, lambda fh: fh.write(text), newline="")


def write(root: Path | str = DEFAULT_ROOT) -> list[Path]:
    """Write every generated file, remove generated files no longer produced; return written."""
    root = Path(root)
    files = build(root)
    for path, text in sorted(files.items()):
        write_text_atomic(path, text)
    for path in sorted(_generated_on_disk(root) - set(files)):
        path.unlink()
    return sorted(files)


def check(root: Path | str = DEFAULT_ROOT) -> list[str]:
    """Generated files that are stale, missing or extra, and published results whose plugins
    have no distribution version; empty when everything is up to date."""
    root = Path(root)
    files = build(root)
    problems = []
    for path, text in sorted(files.items()):
        if not path.is_file():
            problems.append(f"{path} (missing)")
        elif path.read_bytes() != text.encode("utf-8"):
            problems.append(f"{path} (stale)")
    problems += [f"{path} (extra)" for path in sorted(_generated_on_disk(root) - set(files))]
    for result in load_results(root):  # every row must say what to install
        for missing in unversioned(result.get("plugins")):
            problems.append(f"{root / RESULTS_DIR / result['task']['name'] / result['_run']} "
                            f"(no distribution version for {missing})")
    return problems
