"""Leaderboards built only from stored result files (MTEB style), never from memory.

Layout under the leaderboard root (``leaderboards/`` by default):

- ``results/<task>/<file>.json``: one result document each (see ``crsbench.results``);
- ``reported/*.json``: numbers copied from papers (format in ``leaderboards/README.md``);
- ``<task>.md`` and ``<task>.csv``: generated here; ``check`` fails CI when they are stale.

Rows of different task versions, data variants, data checksums or splits never share a
table, and judge metrics of different judges or rubric versions never share a column.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import click

from crsbench.errors import UserError
# the file formats judge_leaderboard.py shares live in a leaf module (it is imported from build())
from crsbench.leaderboard_format import CSV_FIELDS, MD_MARKER, MISSING, SHA_CHARS, csv_text, csv_text_cell  # noqa: F401
from crsbench.provenance import require_versions, unversioned
from crsbench.protocols import PROTOCOLS
from crsbench.results import read_result, write_json_atomic

DEFAULT_ROOT = "leaderboards"
RESULTS_DIR = "results"
REPORTED_DIR = "reported"
GENERATION = "generation"
JUDGE = "judge"
JUDGES_DIR = "judges"  # results/judges/: judge validation records, tabled in judges.md
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# (column label, accepted metric names, decimals). The first name is the canonical one;
# the others absorb spelling differences so a renamed metric does not vanish from a table.
RECOMMENDATION_COLUMNS = (
    ("R@1", ("recall@1",), 3), ("R@10", ("recall@10",), 3), ("R@50", ("recall@50",), 3),
    ("NDCG@10", ("ndcg@10",), 3), ("NDCG@50", ("ndcg@50",), 3),
    ("MRR@10", ("mrr@10",), 3), ("MRR@50", ("mrr@50",), 3),
    ("RT@1", ("rt@1", "recall_true@1"), 3), ("RT@10", ("rt@10", "recall_true@10"), 3),
    ("RT@50", ("rt@50", "recall_true@50"), 3),
    ("AUC", ("auc",), 3),
)
GENERATION_COLUMNS = (
    ("BLEU-1", ("bleu-1", "bleu@1"), 3), ("BLEU-2", ("bleu-2", "bleu@2"), 3),
    ("BLEU-3", ("bleu-3", "bleu@3"), 3), ("BLEU-4", ("bleu-4", "bleu@4"), 3),
    ("BLEU (corpus)", ("corpus_bleu", "corpus-bleu", "bleu"), 2),  # sacrebleu: 0-100 scale
    ("Dist-1", ("dist-1", "distinct-1"), 3), ("Dist-2", ("dist-2", "distinct-2"), 3),
    ("Dist-3", ("dist-3", "distinct-3"), 3), ("Dist-4", ("dist-4", "distinct-4"), 3),
    ("Distinct ratio-2", ("distinct_ratio-2", "distinct-ratio-2"), 3),
    ("ROUGE-L", ("rouge-l", "rouge_l", "rougel"), 3),
    ("Item ratio", ("item_ratio", "item-ratio"), 3),
    ("Mean length", ("mean_length", "mean-length", "length"), 1),
)
# Built-in metrics kept out of the Markdown tables to keep them readable; the CSV has them.
# Any other metric the columns above do not know still gets a column of its own.
CSV_ONLY = frozenset({"distinct_ratio-1", "distinct_ratio-3", "distinct_ratio-4", "rouge-1", "rouge-2"})


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
        _check_result(result, path)
        if result["task"]["name"] != rel.parts[0]:
            raise UserError(f"{path}: result of task {result['task']['name']!r} filed under "
                            f"{rel.parts[0]!r}")
        result["_run"] = path.name
        out.append(result)
    return out


def _check_result(result: dict, path: Path) -> None:
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
        _split_key(key, path)
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


def _split_key(key: str, path: Any = "") -> tuple[str, str]:
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
        _check_reported(doc, path)
        doc["_file"] = path.name
        out.append(doc)
    return out


def _check_reported(doc: Any, path: Path) -> None:
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


def _row_sort_key(result: dict) -> tuple:
    model = result["model"]
    return (str(model["name"]), str(model.get("version") or ""), str(model.get("profile") or ""),
            _seed(result), result["_run"])


def _seed(result: dict) -> int | str:
    seed = result["seeds"]["run"]
    return seed if isinstance(seed, int) else str(seed)


def _sections(results: Iterable[dict]) -> set[str]:
    return {_split_key(key)[0] for r in results for key in r["metrics"]}


def _protocol_order(section: str) -> tuple:
    # Known protocols in their documented order first, then any others alphabetically.
    return (PROTOCOLS.index(section), "") if section in PROTOCOLS else (len(PROTOCOLS), section)


# -- formatting ------------------------------------------------------------------------
def _num(value: Any, digits: int) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def format_cell(cell: dict | None, digits: int = 3) -> str:
    """``value [ci_low, ci_high]``; just the value when the run has no interval."""
    if cell is None:
        return MISSING
    text = _num(cell.get("value"), digits)
    lo, hi = cell.get("ci_low"), cell.get("ci_high")
    if cell.get("value") is not None and lo is not None and hi is not None:
        text += f" [{_num(lo, digits)}, {_num(hi, digits)}]"
    return text


class _Raw(str):
    """Markdown that is already escaped (a code span made by :func:`md_code`)."""


def md_text(text: Any) -> str:
    """Text for a Markdown table cell or line: backslashes, pipes and backticks escaped, ``<``
    and ``>`` as entities (so no HTML tag or code span can come from a result file), one line."""
    if isinstance(text, _Raw):
        return str(text)
    return (str(text).replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")
            .replace("<", "&lt;").replace(">", "&gt;").replace("\r", " ").replace("\n", " "))


_md_escape = md_text


def md_code(text: Any, table: bool = True) -> _Raw:
    """``text`` as a Markdown code span, whatever backticks it holds: the fence is one backtick
    longer than its longest run of them (CommonMark), on one line; in a table ``|`` is escaped
    (GFM splits cells on it even inside code spans)."""
    text = str(text).replace("\r", " ").replace("\n", " ")
    if table:
        text = text.replace("|", "\\|")
    longest = max((len(m) for m in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return _Raw(f"{fence}{pad}{text}{pad}{fence}")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return lines


def _columns(spec, names: Iterable[str], skip: frozenset = frozenset()) -> list[tuple[str, tuple[str, ...], int]]:
    """The spec's columns, then one per metric name neither the spec nor ``skip`` knows."""
    known = {alias for _, aliases, _ in spec for alias in aliases} | skip
    extra = sorted({n for n in names if n.lower() not in known})
    return list(spec) + [(n, (n,), 3) for n in extra]


def _lookup(metrics: dict[str, Any], aliases: tuple[str, ...]) -> Any:
    lowered = {name.lower(): value for name, value in metrics.items()}
    for alias in aliases:
        if alias.lower() in lowered:
            return lowered[alias.lower()]
    return None


def _section_metrics(result: dict, section: str) -> dict[str, dict]:
    out = {}
    for key, cell in result["metrics"].items():
        sec, name = _split_key(key)
        if sec == section:
            out[name] = cell
    return out


def model_package(result: dict) -> str:
    """The distribution (name and version) that provides the result's model: what to install."""
    record = (result.get("plugins") or {}).get("model") or {}
    name = record.get("distribution") or result["model"].get("distribution")
    version = record.get("version") or result["model"].get("distribution_version")
    return f"{name} {version}" if name and version else (name or MISSING)


def profile_label(result: dict) -> str:
    """The profile, marked when the result is not the profile's own configuration (``--set``
    overrides, listed) or a smoke run (a pipeline check, not a measurement)."""
    model = result["model"]
    label = str(model.get("profile") or "default")
    overrides = model.get("overrides")
    if isinstance(overrides, dict) and overrides:
        label += " + " + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False, sort_keys=True)}"
                                   for k, v in sorted(overrides.items()))
    if label.startswith("smoke"):
        label += " (smoke test, not a measurement)"
    return label


def _ident(result: dict, n: Any) -> list[str]:
    model = result["model"]
    return [str(model["name"]), str(model.get("version") or MISSING), model_package(result),
            profile_label(result), str(_seed(result)),
            MISSING if n is None else str(n), md_code(result["_run"])]


# -- measured tables -------------------------------------------------------------------
def _measured_table(results: list[dict], section: str, spec, n_of,
                    skip: frozenset = frozenset()) -> list[str]:
    per_row = [(r, _section_metrics(r, section)) for r in results]
    columns = _columns(spec, {name for _, m in per_row for name in m}, skip)
    header = ["Model", "Version", "Package", "Profile", "Seed", "n", "Run"] + [c[0] for c in columns]
    rows = [_ident(r, n_of(r, m)) + [format_cell(_lookup(m, aliases), d) for _, aliases, d in columns]
            for r, m in per_row]
    return _md_table(header, rows)


def _n_targets(section: str):
    def n_of(result, metrics):
        n = ((result.get("evaluation") or {}).get("n_targets") or {}).get(section)
        return n if n is not None else _max_n(metrics)
    return n_of


def _n_responses(result, metrics):
    n = (result.get("evaluation") or {}).get("n_responses")
    return n if n is not None else _max_n(metrics)


def _max_n(metrics: dict[str, dict]):
    ns = [c.get("n") for c in metrics.values() if isinstance(c.get("n"), int)]
    return max(ns) if ns else None


def _interval_note(results: list[dict]) -> str:
    notes = set()
    for r in results:
        ev = r.get("evaluation") or {}
        level = ev.get("ci_level")
        if isinstance(level, (int, float)) and level <= 1:
            level = level * 100
        level_text = f"{level:g}%" if isinstance(level, (int, float)) else "unknown-level"
        notes.add(f"{level_text} CI, {ev.get('n_bootstrap', '?')} bootstrap replicates, "
                  f"resampling: {ev.get('resampling', '?')}")
    return "; ".join(sorted(notes))


def _has_feedback(result: dict) -> bool:
    """False only when the task declared that it has no seeker feedback (``has_feedback``,
    in the result's task entry or its data info); older results never say so."""
    task = result["task"]
    flag = task.get("has_feedback", (task.get("data") or {}).get("has_feedback"))
    return flag is not False


def _feedback_note(task: str, rows: list[dict]) -> list[str]:
    """Why the feedback columns are empty, under a table of a task without feedback."""
    if any(_has_feedback(r) for r in rows):
        return []
    return [f"RT@1/10/50 and AUC need per-target seeker feedback (liked / disliked), which {md_code(task, False)} "
            f"does not have: crsbench does not compute them on this task, hence {MISSING} in those columns.", ""]


def _group_markdown(key: tuple, results: list[dict]) -> list[str]:
    task, version, variant, sha, split, limit = key
    shown_version = version if version.startswith("v") else f"v{version}"
    subset = f" · first {limit} dialogues only (--limit)" if limit else ""
    lines = [f"## {_md_escape(task)} {_md_escape(shown_version)} · data variant {md_code(variant, False)} "
             f"(sha256 {md_code(sha, False)}) · split {md_code(split, False)}{subset}",
             "", f"Cells: value [low, high] — {_interval_note(results)}.", ""]
    sections = _sections(results)
    protocols = sorted((s for s in sections if s != GENERATION and not s.startswith(JUDGE + "/")),
                       key=_protocol_order)
    for protocol in protocols:
        rows = [r for r in results if protocol in _sections([r])]
        lines += [f"### Recommendation · protocol {md_code(protocol, False)}", "",
                  *_measured_table(rows, protocol, RECOMMENDATION_COLUMNS, _n_targets(protocol)), "",
                  *_feedback_note(task, rows)]
    generators = [r for r in results
                  if r["model"].get("generates") or GENERATION in _sections([r])]
    if generators:
        lines += ["### Generation", "",
                  *_measured_table(generators, GENERATION, GENERATION_COLUMNS, _n_responses, CSV_ONLY), ""]
    for judge_section in sorted(s for s in sections if s.startswith(JUDGE + "/")):
        judge_id, rubric = judge_section[len(JUDGE) + 1:].rsplit("/", 1)
        rows = [r for r in results if judge_section in _sections([r])]
        lines += [f"### Judge {md_code(judge_id, False)} · rubric {md_code(rubric, False)}", "",
                  *_measured_table(rows, judge_section, (), _max_n_of), ""]
    return lines


def _max_n_of(_result, metrics):
    return _max_n(metrics)


# -- reported tables -------------------------------------------------------------------
def _reported_markdown(docs: list[dict]) -> list[str]:
    lines = ["## Reported by the papers (not reproduced here)", "",
             "Numbers copied from the publications as printed; crsbench did not run these models, "
             "and the papers' data and protocol may differ from the tables above.", ""]
    for doc in docs:
        spec = GENERATION_COLUMNS if doc["protocol"] == GENERATION else RECOMMENDATION_COLUMNS
        names = {name for row in doc["rows"] for name in row["metrics"]}
        columns = [c for c in _columns(spec, names)
                   if any(_lookup(row["metrics"], c[1]) is not None for row in doc["rows"])]
        rows = [[str(row["model"])] + [_reported_cell(_lookup(row["metrics"], aliases), d)
                                       for _, aliases, d in columns] for row in doc["rows"]]
        lines += [f"### {_md_escape(doc['source'])}", "",
                  f"Data variant: {_md_escape(doc['data_variant'])} · protocol {md_code(doc['protocol'], False)} · "
                  f"file {md_code(REPORTED_DIR + '/' + doc['_file'], False)}", ""]
        if doc.get("notes"):
            lines += [_md_escape(doc["notes"]), ""]
        lines += [*_md_table(["Model"] + [c[0] for c in columns], rows), ""]
    return lines


def _reported_cell(value: Any, digits: int) -> str:
    return MISSING if value is None else _num(value, digits)


# -- CSV (long format: one line per run or reported row and metric) --------------------
def _csv_lines(results: list[dict], docs: list[dict]) -> list[dict]:
    lines = []
    for r in results:
        task, version, variant, sha, split, limit = group_key(r)
        model = r["model"]
        level = (r.get("evaluation") or {}).get("ci_level")
        for key, cell in r["metrics"].items():
            section, name = _split_key(key)
            lines.append({"origin": "measured", "task": task, "task_version": version,
                          "data_variant": variant, "data_sha256": sha, "split": split, "limit": limit,
                          "section": section, "model": model["name"],
                          "model_version": model.get("version") or "",
                          "package": "" if model_package(r) == MISSING else model_package(r),
                          "profile": profile_label(r), "seed": _seed(r),
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
        mine = sorted((r for r in results if r["task"]["name"] == task), key=_row_sort_key)
        docs = sorted((d for d in reported if d["task"] == task), key=lambda d: d["_file"])
        out[root / f"{task}.md"] = _task_markdown(task, mine, docs)
        out[root / f"{task}.csv"] = csv_text(_csv_lines(mine, docs))
    from crsbench.judge_leaderboard import build_judges

    out.update(build_judges(root))
    return out


def _task_markdown(task: str, results: list[dict], docs: list[dict]) -> str:
    lines = [MD_MARKER, "", f"# Leaderboard: {task}", "",
             "Built from the result files in `results/` by `crsbench leaderboard build`; every "
             "cell shows the point estimate and its bootstrap confidence interval. Results of "
             "different task versions, data variants or splits never share a table. Rows are "
             "sorted by model, version, profile, seed and run file; `n` counts the evaluated "
             "targets (recommendation), responses (generation) or judged units (judge). "
             f"{MISSING} = metric not computed by that run.", ""]
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault(group_key(r), []).append(r)
    for key in sorted(groups):
        lines += _group_markdown(key, groups[key])
    if docs:
        lines += _reported_markdown(docs)
    while lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


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


# -- publish ---------------------------------------------------------------------------
def _slug(value: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9_.]+", "-", str(value)).strip("-.")
    return text or "none"


def published_name(result: dict) -> str:
    """``<model>-<profile>[-set<digest>]-seed<seed>-<variant>[-n<limit>].json``: a run with
    ``--set`` overrides or ``--limit`` never takes the file name of the profile's full-split
    result (and so never asks to overwrite it)."""
    from crsbench.runs import short_digest

    model = result["model"]
    overrides = model.get("overrides")
    limit = (result.get("evaluation") or {}).get("limit")
    return (f"{_slug(model['name'])}-{_slug(model.get('profile') or 'default')}"
            + (f"-set{short_digest(overrides)}" if isinstance(overrides, dict) and overrides else "")
            + f"-seed{_slug(result['seeds']['run'])}-{_slug(result['task']['data']['variant'])}"
            + (f"-n{_slug(limit)}" if limit else "") + ".json")


def verify_against_run(result: dict, source: Path) -> None:
    """A result may be published only as crsbench wrote it: its integrity digest must hold
    (no hand edits), and where the run's ``predictions.jsonl`` lies beside it, that file must be
    the one the metrics were computed from and re-scoring it must give exactly the stored metrics."""
    from crsbench.results import file_sha256, seal_problem

    problem = seal_problem(result)
    if problem:
        raise UserError(f"{source}: cannot publish: {problem}")
    predictions = source.parent / "predictions.jsonl"
    expected = result["integrity"].get("predictions_sha256")
    if not predictions.is_file():
        if expected:
            raise UserError(f"{source}: cannot publish without the run's predictions.jsonl beside it "
                            "(needed to check the metrics); publish the run directory")
        return
    if expected != file_sha256(predictions):
        raise UserError(f"{predictions} is not the predictions file {source.name} was computed from; "
                        "re-score with `crsbench evaluate` before publishing")
    differs = rescored_differences(result, predictions)
    if differs:
        raise UserError(f"{source}: its metrics are not what its predictions give ({'; '.join(differs[:3])}); "
                        "re-score the run with `crsbench evaluate RUN_DIR` before publishing")


def rescored_differences(result: dict, predictions: Path) -> list[str]:
    """Metrics of the result that re-scoring its predictions (same protocols, replicates and
    seed) does not reproduce exactly."""
    from crsbench.evaluation import score_records
    from crsbench.plugins import get_registry
    from crsbench.runs import read_jsonl

    evaluation = result.get("evaluation") or {}
    metrics = score_records(read_jsonl(predictions), get_registry().metrics_objects(),
                            result["task"].get("protocols") or ["standard"],
                            n_boot=int(evaluation.get("n_bootstrap") or 0),
                            seed=int((result.get("seeds") or {}).get("bootstrap", 0)))
    stored = result["metrics"]
    out = [f"{key}: stored {stored.get(key)}, re-scored {metrics.get(key)}"
           for key in sorted(set(stored) | set(metrics)) if stored.get(key) != metrics.get(key)]
    return out


def publish(run_dir: Path | str, root: Path | str = DEFAULT_ROOT, force: bool = False) -> Path:
    """Copy a run's result into ``results/<task>/`` and rebuild the tables.

    The file is validated with ``read_result`` but stored as the run wrote it (sorted keys),
    so the leaderboard keeps the original document. An existing different file is kept
    unless ``force``; republishing the identical result is a no-op.
    """
    run_dir, root = Path(run_dir), Path(root)
    source = run_dir / "result.json" if run_dir.is_dir() else run_dir
    result = read_result(source)
    if (result.get("extra") or {}).get("stopped"):
        raise UserError(f"{source}: this run was stopped by a guard ({result['extra']['stopped']}); "
                        "it has no metrics to publish")
    _check_result(result, source)
    require_versions(result.get("plugins"), source)  # a row must say what to install
    original = json.loads(source.read_text(encoding="utf-8"))
    verify_against_run(original, source)  # as the run wrote it, and as its predictions score
    target = root / RESULTS_DIR / str(result["task"]["name"]) / published_name(result)
    if target.exists() and not force:
        try:
            existing = json.loads(target.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            existing = None
        if existing != original:
            raise UserError(f"{target} already holds a different result; pass --force to replace it")
    write_json_atomic(target, original)
    write(root)
    return target


# -- CLI -------------------------------------------------------------------------------
_root_option = click.option("--root", default=DEFAULT_ROOT, show_default=True,
                            type=click.Path(file_okay=False, path_type=Path),
                            help="Leaderboard directory (results/, reported/, generated tables).")


def _user_errors(fn):
    """Report UserError as one line with exit status 2, standalone or under the main CLI."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = 2  # a user mistake, as everywhere in the CLI
            raise error from None
    return wrapper


@click.group("leaderboard")
def leaderboard_group():
    """Build, check and publish leaderboards from stored result files."""


@leaderboard_group.command("build")
@_root_option
@_user_errors
def build_command(root: Path):
    """Regenerate the tables (<task>.md, <task>.csv) from results/ and reported/."""
    written = write(root)
    for path in written:
        click.echo(f"wrote {path}")
    if not written:
        click.echo(f"no result or reported files under {root}; nothing to build")


@leaderboard_group.command("check")
@_root_option
@_user_errors
def check_command(root: Path):
    """Exit 1 if the generated tables differ from what the result files give."""
    problems = check(root)
    if problems:
        click.echo("leaderboard check failed:", err=True)
        for line in problems:
            click.echo(f"  {line}", err=True)
        click.echo("stale, missing or extra tables: run `crsbench leaderboard build` and commit the result; "
                   "a result without plugin versions: rerun it with the plugin installed as a package",
                   err=True)
        raise SystemExit(1)
    click.echo(f"leaderboard tables under {root} are up to date")


@leaderboard_group.command("publish")
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@_root_option
@click.option("--force", is_flag=True, help="Replace an existing different result file.")
@_user_errors
def publish_command(run_dir: Path, root: Path, force: bool):
    """Copy RUN_DIR/result.json into the leaderboard and rebuild the tables."""
    target = publish(run_dir, root, force=force)
    click.echo(f"published {target}; tables rebuilt under {root}")
