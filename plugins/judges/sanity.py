"""Can a judge tell real replies from broken ones? A quick sanity check on bundled ReDial data.

    python -m crsbench_plugins.judges.sanity --judge smollm2 --n 20

Takes the first ``n`` test samples of the bundled ReDial task (``RedialTask().load(limit=...)``)
and scores four versions of each one's reply in its own context:

- ``ground_truth``: the human recommender's actual reply;
- ``mismatched``: the reply of a sample from another dialogue (same kind of text, wrong context);
- ``truncated``: the first three words of the actual reply;
- ``generic``: the fixed reply "I don't know."

A useful judge puts ground truth clearly above the other three. Prints per-metric means,
the share of samples whose ground truth beats each broken version (mean over metrics), the
spread of the scores, and the time taken; ``--json`` writes the same as JSON.
Numbers for SmolLM2 are in docs/judges.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from crsbench.judge import JudgeInput

CONDITIONS = ("ground_truth", "mismatched", "truncated", "generic")
GENERIC_REPLY = "I don't know."


def build_conditions(samples: list[dict]) -> dict[str, list[JudgeInput]]:
    out: dict[str, list[JudgeInput]] = {c: [] for c in CONDITIONS}
    n = len(samples)
    for i, sample in enumerate(samples):
        context, roles = list(sample["context"]), list(sample["context_roles"])
        other = next((samples[(i + k) % n] for k in range(n // 2, n + n // 2)
                      if samples[(i + k) % n]["dialog_id"] != sample["dialog_id"]), samples[(i + 1) % n])
        out["ground_truth"].append(JudgeInput(context, sample["response"], roles))
        out["mismatched"].append(JudgeInput(context, other["response"], roles))
        out["truncated"].append(JudgeInput(context, " ".join(sample["response"].split()[:3]), roles))
        out["generic"].append(JudgeInput(context, GENERIC_REPLY, roles))
    return out


def load_samples(n: int, limit: int = 20, task: str = "redial") -> list[dict]:
    from crsbench.plugins import lookup  # any registered task, by name: no task module imported here

    split = lookup("tasks", task).obj().load(limit=limit).splits["test"]
    samples = [split[i] for i in range(len(split)) if str(split[i]["response"]).strip()]
    return samples[:n]


def evaluate(judge, samples: list[dict]) -> dict:
    conditions = build_conditions(samples)
    start = time.perf_counter()
    flat = [item for c in CONDITIONS for item in conditions[c]]
    results = judge.score(flat)
    elapsed = time.perf_counter() - start
    n = len(samples)
    by_condition = {c: results[k * n:(k + 1) * n] for k, c in enumerate(CONDITIONS)}
    report: dict = {"judge": judge.describe(), "n": n, "seconds": round(elapsed, 1),
                    "seconds_per_pair": round(elapsed / max(1, len(flat)), 2), "means": {}, "overall": {},
                    "std_overall": {}, "range": {}, "gt_beats": {}, "failed": {}, "stats": judge.stats()}
    overall = {}
    for c, rows in by_condition.items():
        ok = [r for r in rows if r.ok]
        report["failed"][c] = n - len(ok)
        report["means"][c] = {m: round(statistics.fmean(r.scores[m] for r in ok), 3) if ok else None
                              for m in judge.metrics}
        overall[c] = [statistics.fmean(r.scores.values()) if r.ok else None for r in rows]
        vals = [v for v in overall[c] if v is not None]
        report["overall"][c] = round(statistics.fmean(vals), 3) if vals else None
        report["std_overall"][c] = round(statistics.pstdev(vals), 3) if len(vals) > 1 else None
        every = [v for r in ok for v in r.scores.values()]
        report["range"][c] = [round(min(every), 2), round(max(every), 2)] if every else None
    for c in CONDITIONS[1:]:
        pairs = [(g, o) for g, o in zip(overall["ground_truth"], overall[c]) if g is not None and o is not None]
        report["gt_beats"][c] = round(sum(g > o for g, o in pairs) / len(pairs), 3) if pairs else None
    return report


def format_report(report: dict) -> str:
    metrics = report["judge"]["metrics"]
    lines = [f"judge {report['judge']['model']} (rubric {report['judge']['rubric_version']}), "
             f"{report['n']} samples x {len(CONDITIONS)} conditions in {report['seconds']}s "
             f"({report['seconds_per_pair']}s per pair)", "",
             "| condition | " + " | ".join(metrics) + " | mean | std | range | GT beats it |",
             "|---" * (len(metrics) + 5) + "|"]
    for c in CONDITIONS:
        means = " | ".join("–" if v is None else f"{v:.2f}" for v in report["means"][c].values())
        beats = "" if c == "ground_truth" else f"{report['gt_beats'][c]:.0%}"
        low, high = report["range"][c] or (float("nan"), float("nan"))
        lines.append(f"| {c} | {means} | {report['overall'][c]:.2f} | {report['std_overall'][c]:.2f} | "
                     f"{low:.2f}–{high:.2f} | {beats} |")
    lines += ["", f"stats: {report['stats']}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", default="smollm2")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                        help="a judge option, e.g. --option device='\"cpu\"'")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--task", default="redial", help="a registered task (crsbench list tasks)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from crsbench.plugins import get_registry

    options = {}
    for pair in args.option:
        key, _, value = pair.partition("=")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    from crsbench.plugins import lookup

    options.setdefault("rubric", getattr(lookup("tasks", args.task).obj, "default_rubric", None))  # the task's
    start = time.perf_counter()
    judge = get_registry().judges()[args.judge].obj(**options)
    samples = load_samples(args.n, task=args.task)
    report = evaluate(judge, samples)
    report["seconds_total_with_loading"] = round(time.perf_counter() - start, 1)
    print(format_report(report))
    print(f"total with loading: {report['seconds_total_with_loading']}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
