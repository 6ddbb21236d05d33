"""`crsbench compare` and `crsbench samples`: read run directories, print for people."""
from __future__ import annotations

import json
import random
from pathlib import Path

from crsbench.errors import UserError
from crsbench.results import RESULT_FILE
from crsbench.runs import ITEM_NAMES_FILE, PREDICTIONS_FILE, read_config, read_jsonl, require_run_dir
from crsbench.tables import fmt, fmt_p


def read_item_names(run_dir: Path) -> dict:
    """item_names.json ({item id: title}); a missing one gives ids, a damaged one an error."""
    path = Path(run_dir) / ITEM_NAMES_FILE
    if not path.exists():
        return {}
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(names, dict):
        raise UserError(f"{path}: not an object of item id -> title")
    return names


def compare_runs(run_a: Path, run_b: Path, n_bootstrap: int = 1000, seed: int = 0) -> str:
    from tabulate import tabulate

    run_a, run_b = require_run_dir(run_a), require_run_dir(run_b)
    config_a, config_b = read_config(run_a), read_config(run_b)
    if config_a["task"] != config_b["task"]:
        raise UserError(f"the runs are on different tasks ({config_a['task']} vs {config_b['task']})")
    protocols = [p for p in config_a["protocols"] if p in config_b["protocols"]]
    records_a, records_b = read_jsonl(run_a / PREDICTIONS_FILE), read_jsonl(run_b / PREDICTIONS_FILE)
    try:
        rows, refused = paired_rows(run_a, run_b, records_a, records_b, protocols, n_bootstrap, seed)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    table = [[key, fmt(r["a"]), fmt(r["b"]), fmt(r["delta"]), f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]",
              fmt_p(r["p_value"], n_bootstrap), r["n"]] for key, r in sorted(rows.items())]
    header = f"A = {run_a} ({config_a.get('model', '?')})\nB = {run_b} ({config_b.get('model', '?')})\n"
    notes = ["\n" + line for line in refusal_lines(refused)]
    return header + tabulate(table, headers=["metric", "A", "B", "B - A", "95% CI of B - A", "p", "n"]) + "".join(notes)


def paired_rows(run_a: Path, run_b: Path, records_a: list[dict], records_b: list[dict], protocols,
                n_boot: int, seed: int) -> tuple[dict, list]:
    """``compare_records`` of two runs, without judge metrics whose settings differ (those are
    returned as the second value; see :func:`unpairable_judges`). Raises ValueError when the
    runs share no samples."""
    from crsbench.evaluation import compare_records
    from crsbench.plugins import get_registry

    refused = unpairable_judges(run_a, run_b, records_a, records_b)
    drop = {k for _, k, _ in refused if k}  # same key, other settings: older runs without a digest
    if drop:
        strip = lambda recs: [dict(r, judge={k: v for k, v in (r.get("judge") or {}).items() if k not in drop})  # noqa: E731
                              for r in recs]
        records_a, records_b = strip(records_a), strip(records_b)
    return compare_records(records_a, records_b, get_registry().metrics_objects(), protocols,
                           n_boot=n_boot, seed=seed), refused


def refusal_lines(refused: list) -> list[str]:
    return [f"Not paired: judge {name} scored A with {sa} and B with {sb}; scores under different judge "
            f"settings are not comparable (judge both runs alike: crsbench rescore RUN --judge ...)"
            for name, _, (sa, sb) in refused]


def _judge_settings(run_dir: Path) -> dict:
    """{judge key: settings} as the run's result file recorded them."""
    try:
        judge = json.loads((run_dir / RESULT_FILE).read_text()).get("extra", {}).get("judge") or {}
    except (OSError, ValueError, AttributeError):  # no result file, or not a result object
        return {}
    return {judge["key"]: judge.get("settings")} if isinstance(judge, dict) and "key" in judge else {}


def unpairable_judges(run_a: Path, run_b: Path, records_a: list[dict], records_b: list[dict]) -> list[tuple]:
    """Judge groups the two runs share by model and rubric but not by settings, as
    ``(model/rubric, key to drop or None, (settings A, settings B))``. Keys carrying a settings
    digest never match across settings; keys without one (older runs) are checked against
    the settings the result files recorded."""
    def groups(records):
        return {k for r in records for k in (r.get("judge") or {})}

    def base(key):
        model, _, rubric = key.rpartition("/")
        return f"{model.split('~')[0]}/{rubric}"

    keys_a, keys_b = groups(records_a), groups(records_b)
    settings_a, settings_b = _judge_settings(run_a), _judge_settings(run_b)
    out = []
    for ka in sorted(keys_a):
        for kb in sorted(keys_b):
            if base(ka) != base(kb):
                continue
            sa, sb = settings_a.get(ka), settings_b.get(kb)
            if ka != kb:
                out.append((base(ka), None, (sa or ka, sb or kb)))
            elif sa is not None and sb is not None and sa != sb:
                out.append((base(ka), ka, (sa, sb)))
    return out


def show_samples(run_dir: Path, count: int, seed: int) -> str:
    from crsbench.evaluation import validate_records

    records = read_jsonl(run_dir / PREDICTIONS_FILE)
    validate_records(records, str(run_dir / PREDICTIONS_FILE))
    for number, r in enumerate(records, 1):  # what only this display reads
        if not isinstance(r.get("context", []), list) or not isinstance(r.get("top", []), list):
            raise UserError(f"{run_dir / PREDICTIONS_FILE}: record {number}: context and top must be lists")
    names = read_item_names(run_dir)
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
