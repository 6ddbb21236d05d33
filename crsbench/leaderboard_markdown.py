"""The Markdown of a task's leaderboard: column specs, cell formatting and escaping, the
measured tables (one per comparable group and protocol) and the papers' reported numbers."""
from __future__ import annotations

import json
import re
from typing import Any, Iterable

from crsbench.leaderboard_format import MD_MARKER, MISSING
from crsbench.leaderboard_load import GENERATION, JUDGE, REPORTED_DIR, group_key, run_seed, split_key
from crsbench.protocols import PROTOCOLS

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


def _sections(results: Iterable[dict]) -> set[str]:
    return {split_key(key)[0] for r in results for key in r["metrics"]}


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


def table_columns(spec, names: Iterable[str], skip: frozenset = frozenset()) -> list[tuple[str, tuple[str, ...], int]]:
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
        sec, name = split_key(key)
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
            profile_label(result), str(run_seed(result)),
            MISSING if n is None else str(n), md_code(result["_run"])]


# -- measured tables -------------------------------------------------------------------
def _measured_table(results: list[dict], section: str, spec, n_of,
                    skip: frozenset = frozenset()) -> list[str]:
    per_row = [(r, _section_metrics(r, section)) for r in results]
    columns = table_columns(spec, {name for _, m in per_row for name in m}, skip)
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
        columns = [c for c in table_columns(spec, names)
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


def task_markdown(task: str, results: list[dict], docs: list[dict]) -> str:
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
