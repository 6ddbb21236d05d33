"""`crsbench report RUN_DIR [RUN_DIR...]`: one Markdown and one HTML page about some runs.

Sections: each run's metrics with CIs; the comparison of every later run with the first
(paired dialogue bootstrap); the sections plugins add through ``register_report_sections``
(a model's own summary of its training, say); training curves found in the run
directories (loss, reward, KL); side-by-side replies of the runs on the same test samples.
Everything comes from the run directories' files.
"""
from __future__ import annotations

import copy
import html
import json
import os
import random
import shutil
from pathlib import Path

from crsbench.runs import PREDICTIONS_FILE, read_config, read_jsonl, require_run_dir
from crsbench.tables import fmt, fmt_p

CURVES = ("*.png",)


def _blocks(run_dirs: list[Path], out_dir: Path, n_samples: int, seed: int) -> list[tuple]:
    from crsbench.compare import paired_rows, refusal_lines
    from crsbench.evaluation import validate_records
    from crsbench.results import read_result

    blocks: list[tuple] = [("h1", "crsbench report")]
    results = [read_result(d) for d in run_dirs]
    labels = [f"{r['model']['name']} ({d.name})" for r, d in zip(results, run_dirs)]

    blocks.append(("h2", "Runs"))
    blocks.append(("table", ["run", "model", "profile", "task", "data", "git", "seconds"],
                   [[d.name, r["model"]["name"], r["model"]["profile"], f"{r['task']['name']} v{r['task']['version']}",
                     r["task"]["data"].get("variant", "?"), str((r.get("environment", {}).get("git") or {}).get("commit") or "?")[:10],
                     fmt(r.get("timings", {}).get("total"), 0)] for d, r in zip(run_dirs, results)]))

    blocks.append(("h2", "Metrics (95% bootstrap CI over dialogues)"))
    keys = sorted({k for r in results for k in r["metrics"]})
    rows = []
    for key in keys:
        row = [key]
        for r in results:
            m = r["metrics"].get(key)
            row.append("–" if m is None else f"{fmt(m['value'])} [{fmt(m['ci_low'])}, {fmt(m['ci_high'])}]")
        rows.append(row)
    blocks.append(("table", ["metric", *labels], rows))

    records = [read_jsonl(d / PREDICTIONS_FILE) for d in run_dirs]
    for d, recs in zip(run_dirs, records):
        validate_records(recs, str(d / PREDICTIONS_FILE))
    configs = [read_config(d) for d in run_dirs]
    for k in range(1, len(run_dirs)):
        protocols = [p for p in configs[0]["protocols"] if p in configs[k]["protocols"]]
        try:
            comp, refused = paired_rows(run_dirs[0], run_dirs[k], records[0], records[k], protocols, 1000, seed)
        except ValueError as exc:
            blocks.append(("p", f"{labels[k]} vs {labels[0]}: not comparable ({exc})"))
            continue
        blocks.append(("h2", f"{labels[k]} minus {labels[0]} (paired bootstrap)"))
        blocks.append(("table", ["metric", "A", "B", "B - A", "95% CI", "p", "n"],
                       [[key, fmt(c["a"]), fmt(c["b"]), fmt(c["delta"]), f"[{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]",
                         fmt_p(c["p_value"], 1000), str(c["n"])] for key, c in sorted(comp.items())]))
        for line in refusal_lines(refused):
            blocks.append(("p", line))

    blocks += _plugin_sections(results, labels)

    for d, label in zip(run_dirs, labels):
        images = _run_images(d)
        if images:
            blocks.append(("h2", f"Curves: {label}"))
            for image in images:
                target = out_dir / "images" / d.name / image.relative_to(d / "checkpoints")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(image, target)
                blocks.append(("img", str(target.relative_to(out_dir)), str(image.relative_to(d))))

    shared = [r["sample_id"] for r in records[0] if r.get("response") is not None and r["targets"]]
    by_id = [{r["sample_id"]: r for r in recs} for recs in records]
    shared = [s for s in shared if all(s in b and b[s].get("response") is not None for b in by_id)]
    if shared and n_samples:  # replies to show: no heading over nothing when a run does not generate
        blocks.append(("h2", "Side by side"))
    for sample_id in sorted(random.Random(seed).sample(shared, min(n_samples, len(shared)))):
        first = by_id[0][sample_id]
        lines = [f"| {t}" for t in (first.get("context") or [])[-4:]]
        lines.append(f"reference: {first['reference']}")
        lines += [f"{label}: {b[sample_id]['response']}" for label, b in zip(labels, by_id)]
        blocks.append(("h3", sample_id))
        blocks.append(("pre", "\n".join(lines)))
    return blocks


SECTION_BLOCKS = ("h2", "h3", "p", "pre", "table")  # no h1, no img: images are copied by the core only


def _plugin_sections(results: list[dict], labels: list[str]) -> list[tuple]:
    """The blocks of every registered report section, in plugin precedence order. A section
    that raises or returns something that is not a list of blocks is reported in one line
    instead of its blocks; it does not stop the report."""
    from crsbench.plugins import get_registry

    blocks: list[tuple] = []
    for entry in get_registry().report_sections():
        try:
            out = entry.obj(copy.deepcopy(results), list(labels))  # a section cannot alter what others see
            out = [] if out is None else list(out)
            for block in out:
                if not _valid_block(block):
                    raise TypeError(f"not a report block: {block!r:.80}")
        except Exception as exc:  # a broken plugin section must not lose the rest of the report
            blocks.append(("p", f"Report section {entry.name} of plugin {entry.plugin} failed: "
                                f"{type(exc).__name__}: {exc}"))
            continue
        blocks += out
    return blocks


def _valid_block(block) -> bool:
    if not isinstance(block, tuple) or not block or block[0] not in SECTION_BLOCKS:
        return False
    if block[0] == "table":
        return (len(block) == 3 and isinstance(block[1], (list, tuple)) and isinstance(block[2], (list, tuple))
                and all(isinstance(row, (list, tuple)) and len(row) == len(block[1]) for row in block[2]))
    return len(block) == 2 and isinstance(block[1], str)


def _run_images(run_dir: Path) -> list[Path]:
    """The curve images under a run's checkpoints/: regular files only, none reached through a
    symlink (a link to /etc/shadow named curve.png is not copied into a report)."""
    root = run_dir / "checkpoints"
    if root.is_symlink() or not root.is_dir():
        return []
    out = []
    for dirpath, _dirs, files in os.walk(root):  # os.walk does not follow directory symlinks
        for name in files:
            path = Path(dirpath) / name
            if path.suffix.lower() == ".png" and not path.is_symlink() and path.is_file():
                out.append(path)
    return sorted(out)


def _md_text(text) -> str:
    """Text from run files for a Markdown line or table cell: no HTML tag, code span or table
    break can come from a model name, a reply or a sample id."""
    from crsbench.leaderboard_markdown import md_text

    return md_text(text)


def _md_fence(text: str) -> str:
    """A fenced block that ``text`` cannot close: the fence is longer than any backtick run in it."""
    import re

    longest = max((len(m) for m in re.findall("`{3,}", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _markdown(blocks) -> str:
    from urllib.parse import quote

    out = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + _md_text(rest[0]))
        elif kind == "p":
            out.append(_md_text(rest[0]))
        elif kind == "pre":
            out.append(_md_fence(rest[0]))
        elif kind == "img":
            out.append(f"![{_md_text(rest[1]).replace('[', '(').replace(']', ')')}](<{quote(rest[0])}>)")
        elif kind == "table":
            header, rows = rest
            out.append("\n".join(["| " + " | ".join(map(_md_text, header)) + " |", "|" + "---|" * len(header)] +
                                 ["| " + " | ".join(map(_md_text, row)) + " |" for row in rows]))
        out.append("")
    return "\n".join(out)


def _html(blocks) -> str:
    esc = html.escape
    body = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{esc(rest[0])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{esc(rest[0])}</p>")
        elif kind == "pre":
            body.append(f"<pre>{esc(rest[0])}</pre>")
        elif kind == "img":
            body.append(f'<figure><img src="{esc(rest[0])}" alt="{esc(rest[1])}"><figcaption>{esc(rest[1])}'
                        "</figcaption></figure>")
        elif kind == "table":
            header, rows = rest
            head = "".join(f"<th>{esc(str(h))}</th>" for h in header)
            trs = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>" for row in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}pre{background:#f6f6f6;padding:8px;"
             "white-space:pre-wrap}img{max-width:600px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>crsbench report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(run_dirs: list[str | Path], out_dir: str | Path, n_samples: int = 5, seed: int = 0) -> Path:
    dirs = [require_run_dir(d) for d in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blocks = _blocks(dirs, out, n_samples, seed)
    for name, text in (("report.md", _markdown(blocks)), ("report.html", _html(blocks))):
        tmp = out / f".{name}.tmp{os.getpid()}"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)
    (out / "runs.json").write_text(json.dumps([str(d) for d in dirs], indent=2))
    return out / "report.md"
