"""`crsbench compare` and `crsbench samples`: read run directories, print for people."""
from __future__ import annotations

import json
import random
from pathlib import Path

from crsbench.errors import UserError
from crsbench.runs import ITEM_NAMES_FILE, PREDICTIONS_FILE, read_config, read_jsonl, require_run_dir
from crsbench.tables import fmt, fmt_p


def compare_runs(run_a: Path, run_b: Path, n_bootstrap: int = 1000, seed: int = 0) -> str:
    from tabulate import tabulate

    from crsbench.evaluation import compare_records
    from crsbench.plugins import get_registry

    run_a, run_b = require_run_dir(run_a), require_run_dir(run_b)
    config_a, config_b = read_config(run_a), read_config(run_b)
    if config_a["task"] != config_b["task"]:
        raise UserError(f"the runs are on different tasks ({config_a['task']} vs {config_b['task']})")
    protocols = [p for p in config_a["protocols"] if p in config_b["protocols"]]
    try:
        rows = compare_records(read_jsonl(run_a / PREDICTIONS_FILE), read_jsonl(run_b / PREDICTIONS_FILE),
                               get_registry().metrics_objects(), protocols, n_boot=n_bootstrap, seed=seed)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    table = [[key, fmt(r["a"]), fmt(r["b"]), fmt(r["delta"]), f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]",
              fmt_p(r["p_value"], n_bootstrap), r["n"]] for key, r in sorted(rows.items())]
    header = f"A = {run_a} ({config_a['model']})\nB = {run_b} ({config_b['model']})\n"
    return header + tabulate(table, headers=["metric", "A", "B", "B - A", "95% CI of B - A", "p", "n"])


def show_samples(run_dir: Path, count: int, seed: int) -> str:
    records = read_jsonl(run_dir / PREDICTIONS_FILE)
    names_path = run_dir / ITEM_NAMES_FILE
    names = json.loads(names_path.read_text()) if names_path.exists() else {}
    name = lambda item: names.get(str(item), str(item))  # noqa: E731
    chosen = sorted(random.Random(seed).sample(range(len(records)), min(count, len(records))))
    out = []
    for i in chosen:
        r = records[i]
        out.append(f"=== {r['sample_id']} ===")
        for turn in r.get("context", [])[-4:]:
            out.append(f"  | {turn}")
        out.append(f"  reference: {r['reference']}")
        if r.get("response") is not None:
            out.append(f"  model:     {r['response']}")
        for t in r["targets"]:
            feedback = f" ({t['feedback']})" if t.get("feedback") is not None else ""  # tasks without feedback
            out.append(f"  target: {name(t['item'])}{feedback}, rank {t['rank']}")
        if r["top"]:
            out.append("  top 5: " + "; ".join(name(item) for item in r["top"][:5]))
    return "\n".join(out)
