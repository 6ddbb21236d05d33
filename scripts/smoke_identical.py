"""Check that a refactor changed no behaviour: every first-party model's smoke run, before and after.

    python scripts/smoke_identical.py run OUT_DIR        # in the checkout before, then after
    python scripts/smoke_identical.py compare BEFORE AFTER

``run`` writes one run directory per model (the ECR family on the ``smoke`` profile, the
baselines on their only profile; the first 20 ReDial test dialogues) with a fresh text-encoder
cache under OUT_DIR. ``compare`` checks every metric (value, CI, n) and the predictions file
byte for byte, prints each difference and exits 1 if there is any.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

MODELS = {"popularity": None, "repeat-context": None, "random": None, "bm25": None,
          "unicrs": "smoke", "ecr": "smoke", "ecr-rl": "smoke"}


def run_all(out: Path) -> None:
    env = dict(os.environ, CRSBENCH_CACHE_DIR=str(out / "cache"))
    for model, profile in MODELS.items():
        cmd = [sys.executable, "-m", "crsbench", "run", model, "--task", "redial", "--limit", "20",
               "--output-dir", str(out / "runs"), "--no-progress"] + (["--profile", profile] if profile else [])
        print("+", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def compare(before: Path, after: Path) -> int:
    differences = 0
    for run_b in sorted(p for p in (before / "runs").iterdir() if p.is_dir()):
        run_a = after / "runs" / run_b.name
        if not (run_a / "result.json").exists():
            print(f"{run_b.name}: missing after")
            differences += 1
            continue
        mb = json.loads((run_b / "result.json").read_text())["metrics"]
        ma = json.loads((run_a / "result.json").read_text())["metrics"]
        changed = [k for k in sorted(set(mb) | set(ma)) if mb.get(k) != ma.get(k)]
        same_predictions = digest(run_b / "predictions.jsonl") == digest(run_a / "predictions.jsonl")
        print(f"{run_b.name}: {len(mb)} metrics, {len(changed)} differ; predictions identical: {same_predictions}")
        for key in changed:
            print(f"    {key}: {mb.get(key)} -> {ma.get(key)}")
        differences += len(changed) + (not same_predictions)
    print("ALL IDENTICAL" if not differences else f"{differences} DIFFERENCES")
    return 1 if differences else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        run_all(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
