"""Plain-text tables printed by the CLI."""
from __future__ import annotations


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{0.0 if round(value, digits) == 0 else value:.{digits}f}"  # no "-0.0000"


def fmt_p(p, n_boot: int = 1000) -> str:
    """A bootstrap p-value; 0 means no replicate crossed zero, i.e. p < 1 / n_boot."""
    if p is None:
        return "-"
    return f"<{1 / n_boot:.2g}" if p == 0 else f"{p:.3f}"


def metrics_table(result: dict) -> str:
    """One row per metric: value and 95% CI, grouped by protocol / generation."""
    from tabulate import tabulate

    rows = []
    for key in sorted(result["metrics"], key=_order):
        m = result["metrics"][key]
        group, name = key.split("/", 1) if "/" in key else ("", key)
        rows.append([group, name, fmt(m["value"]), f"[{fmt(m['ci_low'])}, {fmt(m['ci_high'])}]", m["n"]])
    return tabulate(rows, headers=["group", "metric", "value", "95% CI", "n"], tablefmt="simple")


def _order(key: str):
    group = key.split("/", 1)[0]
    rank = {"standard": 0, "dedup": 1, "generation": 2}.get(group, 3)
    return rank, key
