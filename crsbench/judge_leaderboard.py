"""``leaderboards/judges.md`` and ``judges.csv``: judges measured against people.

Built only from the validation records in ``<root>/results/judges/`` (written by
``crsbench judge validate`` / ``score-run`` or by a learned judge's own cross-validation);
``crsbench leaderboard build`` writes them and ``check`` fails when they are stale. One table
per (benchmark, data half, data checksum, --limit, level, aspect); rows: every validated
judge or scored run file, the published evaluators (numbers as printed, copied into the
records from the benchmark's baselines file), and the trivial predictors computed on the
same units. A judge's cell is marked when it is below the best trivial predictor on that
statistic.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from crsbench.judge_validation import load_records
from crsbench.leaderboard_format import MD_MARKER, MISSING, SHA_CHARS, csv_text

MD_NAME, CSV_NAME = "judges.md", "judges.csv"
BELOW = "▼"
STATS = (("spearman", "spearman_ci", "Spearman pooled"),
         ("within_system_spearman", "within_system_spearman_ci", "Spearman within system"),
         ("pearson", "pearson_ci", "Pearson pooled"))
_MD_SPECIAL = set("\\`*_[]<>|~")


def md_text(text: Any) -> str:
    """Plain text safe in a Markdown table cell: every Markdown character backslash-escaped."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in " ".join(str(text).split()))


def _cell(stats: dict | None, key: str, ci_key: str, best_trivial: float | None, mark: bool) -> str:
    value = (stats or {}).get(key)
    if value is None:
        return MISSING
    text = f"{value:.3f}"
    ci = (stats or {}).get(ci_key)
    if ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    if mark and best_trivial is not None and value < best_trivial:
        text += f" {BELOW}"
    return text


def _group_key(record: dict) -> tuple:
    data = record["data"]
    limit = data.get("limit")
    half = str(data["half"]) + (f" · conversations of part {data['subset']}" if data.get("subset") else "")
    return (str(record.get("benchmark") or "?"), half, str(data.get("sha256") or "")[:SHA_CHARS],
            "" if limit is None else str(limit))


def _aspect_level(stats: dict, record: dict) -> str:
    levels = record.get("levels") or []
    return str(stats.get("level") or (levels[0] if len(levels) == 1 else "?"))


def _kind(record: dict) -> str:
    judge = record.get("judge") or {}
    kind = "run file" if judge.get("judge") == "run-file" else "judge"
    if record["rubric"] != "run-file":
        kind += f" · rubric {record['rubric']}"
    return kind if record.get("split", "all") == "all" else f"{kind} · split {record['split']}"


def _tables(records: list[dict]) -> dict[tuple, dict[str, Any]]:
    """(group key, level, aspect) -> {"judges": [(record, stats)], "trivial": {...}, "published": {...},
    "position": the aspect's place in its benchmark's order}"""
    tables: dict[tuple, dict[str, Any]] = {}
    for record in records:
        order = list(record.get("aspect_order") or [])
        for aspect, stats in record["aspects"].items():
            key = (*_group_key(record), _aspect_level(stats, record), aspect)
            table = tables.setdefault(key, {"judges": [], "trivial": {}, "published": {}, "n_boot": set(),
                                            "position": order.index(aspect) if aspect in order else len(order)})
            table["judges"].append((record, stats))
            table["n_boot"].add((record.get("bootstrap") or {}).get("n"))
            for name, per in (record.get("trivial") or {}).items():
                if aspect in per:
                    table["trivial"].setdefault(name, per[aspect])
            for name, per in (record.get("published") or {}).items():
                if isinstance(per, dict) and isinstance(per.get(aspect), dict) \
                        and per[aspect].get("spearman") is not None:
                    table["published"].setdefault(name, per[aspect])
    return tables


def _best(trivial: dict, key: str) -> float | None:
    values = [s.get(key) for s in trivial.values() if s.get(key) is not None]
    return max(values) if values else None


def _markdown(records: list[dict]) -> str:
    lines = [MD_MARKER, "", "# Judges measured against people", "",
             "Built by `crsbench leaderboard build` from the validation records in `results/judges/` "
             "(`crsbench judge validate JUDGE --publish`, `crsbench judge score-run FILE --publish`). "
             "Each cell: value [95% bootstrap CI, resampling conversations]. *Spearman pooled*: over all "
             "rated units of the half, as the papers report; *within system*: the mean over the systems "
             "of the per-system Spearman, what counts when a judge compares replies of one system (an RL "
             "reward does). *Published*: the paper's numbers as printed (no CI, no within-system value). "
             f"*Trivial*: predictors that read no meaning, on the same units. {BELOW}: below the best "
             f"trivial predictor on that statistic. {MISSING}: not available. Judge scores are on 0-9, "
             "people's on their own scales; correlations do not depend on the scale.", ""]
    tables = _tables(records)
    current_group = None
    for key in sorted(tables, key=lambda k: (k[:4], _aspect_order(k, tables[k]["position"]))):
        benchmark, half, sha, limit, level, aspect = key
        if (benchmark, half, sha, limit) != current_group:
            current_group = (benchmark, half, sha, limit)
            subset = (f" · a sample of {limit} units per level only (--limit: whole conversations in a fixed "
                      "pseudo-random order), not the whole half" if limit else "")
            lines += [f"## {md_text(benchmark)} · half `{half}` (data sha256 `{sha}`){subset}", ""]
        table = tables[key]
        n_boot = ", ".join(str(n) for n in sorted(table["n_boot"], key=str))
        lines += [f"### {md_text(level)} level · {md_text(aspect)}", "",
                  f"Bootstrap replicates: {n_boot}.", ""]
        header = ["Evaluator", "Kind"] + [label for _, _, label in STATS] + ["n", "Record"]
        rows = []
        best = {key_: _best(table["trivial"], key_) for key_, _, _ in STATS}
        judged = sorted(table["judges"], key=lambda rs: (-(rs[1].get("spearman") or -2.0), rs[0]["judge_id"],
                                                         rs[0]["_file"]))
        for record, stats in judged:
            below = [label for key_, _, label in STATS[:2] if stats.get(key_) is not None
                     and best[key_] is not None and stats[key_] < best[key_]]
            kind = _kind(record) + (f" · below a trivial predictor ({', '.join(below)})" if below else "")
            rows.append([md_text(record["judge_id"]), md_text(kind)]
                        + [_cell(stats, k, c, best[k], True) for k, c, _ in STATS]
                        + [str(stats.get("n", MISSING)), f"`{record['_file']}`"])
        for name in sorted(table["published"], key=lambda n: (-(table["published"][n].get("spearman") or -2), n)):
            p = table["published"][name]
            rows.append([md_text(name), "published (paper)", _cell(p, "spearman", "", None, False), MISSING,
                         _cell(p, "pearson", "", None, False), MISSING, MISSING])
        for name in sorted(table["trivial"]):
            t = table["trivial"][name]
            rows.append([md_text(name), "trivial predictor"] + [_cell(t, k, c, None, False) for k, c, _ in STATS]
                        + [str(t.get("n", MISSING)), MISSING])
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    while lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def _aspect_order(key: tuple, position: int) -> tuple:
    level, aspect = key[4], key[5]
    return ({"turn": 0, "dialogue": 1}.get(level, 2), level, position, aspect)


def _csv_lines(records: list[dict]) -> list[dict]:
    """Long format, in the leaderboard's CSV columns: one line per evaluator, aspect and statistic."""
    lines = []

    def add(origin, record, name, level, aspect, stats, source="", run=""):
        benchmark, half, sha, limit = _group_key(record)
        for key, ci_key, _ in STATS:
            if stats.get(key) is None:
                continue
            ci = stats.get(ci_key) or [None, None]
            lines.append({"origin": origin, "task": benchmark, "task_version": record["rubric"] if origin == "measured" else "",
                          "data_variant": half, "data_sha256": sha, "split": record.get("split", ""), "limit": limit,
                          "section": f"{level}/{aspect}", "model": name, "model_version": "", "package": "",
                          "profile": "", "seed": (record.get("bootstrap") or {}).get("seed", ""), "run": run,
                          "metric": key, "value": stats[key], "ci_low": ci[0], "ci_high": ci[1],
                          "ci_level": (record.get("bootstrap") or {}).get("ci_level") if ci[0] is not None else None,
                          "n": stats.get("n"), "source": source})

    seen: set = set()
    for record in records:
        for aspect, stats in record["aspects"].items():
            level = _aspect_level(stats, record)
            add("measured", record, record["judge_id"], level, aspect, stats, run=f"results/judges/{record['_file']}")
            group = (*_group_key(record), level, aspect)
            for name, per in (record.get("trivial") or {}).items():
                if aspect in per and (group, "trivial", name) not in seen:
                    seen.add((group, "trivial", name))
                    add("trivial", record, name, level, aspect, per[aspect])
            for name, per in (record.get("published") or {}).items():
                if isinstance(per, dict) and isinstance(per.get(aspect), dict) and (group, "published", name) not in seen:
                    seen.add((group, "published", name))
                    add("reported", record, name, level, aspect, per[aspect], source="published")
    return lines


def build_judges(root: Path | str) -> dict[Path, str]:
    """Path -> content of judges.md and judges.csv (nothing when there are no records)."""
    root = Path(root)
    records = load_records(root)
    if not records:
        return {}
    return {root / MD_NAME: _markdown(records), root / CSV_NAME: csv_text(_csv_lines(records))}
