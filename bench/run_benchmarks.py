"""Speed and memory of full `crsbench run` jobs, one subprocess each.

    .venv/bin/python bench/run_benchmarks.py [--models popularity repeat-context random] [--task redial]
    .venv/bin/python bench/run_benchmarks.py --models ecr unicrs --cold        # the ECR pipeline
    .venv/bin/python bench/run_benchmarks.py --models ecr-rl --cold            # the main job

``--cold`` gives each run an empty cache directory (no cached embeddings, preprocessing or
judge scores), as on a fresh machine. Per-stage seconds come from the run's result file.

Each run goes to a fresh output directory; wall time is measured around the subprocess and
peak memory is the run's own max RSS (from its result file). Results are written to bench/results/<task>.json and
printed as a table. Benchmarks measure; tests never assert on these numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def bench_one(model: str, task: str, extra: list[str], cold: bool = False, keep: str | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        # --keep-runs keeps the run directory (to publish or compare it); the cache stays temporary
        out = str(Path(keep)) if keep else tmp
        Path(out).mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if cold:
            env["CRSBENCH_CACHE_DIR"] = str(Path(tmp) / "cache")
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "crsbench.cli", "run", model, "--task", task,
                               "--output-dir", out, "--no-progress", *extra], capture_output=True, text=True,
                              env=env)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{model} failed:\n{proc.stderr}")
        result = json.loads(max(Path(out).glob("*/result.json"), key=lambda p: p.stat().st_mtime).read_text())
    return {"model": model, "wall_s": round(wall, 1), "timings_s": result["timings"],
            "peak_rss_mb": result["peak_memory_mb"],  # measured by the run itself
            "recall@10": result["metrics"]["standard/recall@10"]["value"],
            "stage_seconds": (result.get("extra") or {}).get("stage_seconds"),
            "stage_peak_rss_mb": (result.get("extra") or {}).get("stage_peak_rss_mb"),
            "rl_seconds": ((result.get("extra") or {}).get("rl") or {}).get("seconds"),
            "cold_cache": cold, "load_average_after": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["popularity", "repeat-context", "random"])
    parser.add_argument("--task", default="redial")
    parser.add_argument("--cold", action="store_true", help="empty cache directory for each run")
    parser.add_argument("--keep-runs", metavar="DIR", help="write the run directories here instead of a temp dir")
    parser.add_argument("extra", nargs="*", help="extra arguments passed to crsbench run (after --)")
    args = parser.parse_args()
    # the code measured is the code at the start (edits during a long run do not count)
    git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, cwd=HERE).stdout.strip())
    rows = [bench_one(m, args.task, args.extra, args.cold, args.keep_runs) for m in args.models]
    report = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count()}, "command": sys.argv, "git": git, "git_dirty": dirty,
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "runs": rows}
    out = HERE / "results" / f"{args.task}-{'-'.join(args.models)}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for r in rows:
        t = r["timings_s"]
        print(f"{r['model']:<16} wall {r['wall_s']:>7.1f}s  load {t['load']:.1f}s fit {t['fit']:.1f}s "
              f"predict {t['predict']:.1f}s score {t['score']:.1f}s  peak {r['peak_rss_mb']:.0f} MB")
        for name, seconds in {**(r["stage_seconds"] or {}), **(r["rl_seconds"] or {})}.items():
            print(f"    {name:<24} {seconds:>8.1f}s")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
