"""A whole `crsbench run` under `accelerate launch` with 2 CPU processes (gloo) gives the
metrics of one process, and only rank 0 writes the run directory."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_two_process_run_matches_one_process(tmp_path):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    assert accelerate, "accelerate's launcher is installed with the project"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "CRSBENCH_CACHE_DIR": str(tmp_path / "cache")}
    args = ["run", "unicrs", "--task", "redial", "--profile", "smoke", "--limit", "6", "--n-bootstrap", "20",
            "--device", "cpu", "--no-progress"]
    one = subprocess.run([sys.executable, "-m", "crsbench", *args, "--output-dir", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([accelerate, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "crsbench", *args,
                          "--output-dir", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]

    def metrics(out):
        (run_dir,) = [p for p in (tmp_path / out).iterdir() if p.is_dir()]
        result = json.loads((run_dir / "result.json").read_text())
        return run_dir, {k: v["value"] for k, v in result["metrics"].items()}

    dir1, m1 = metrics("one")
    dir2, m2 = metrics("two")
    assert set(m1) == set(m2)
    for key in m1:
        assert m2[key] == pytest.approx(m1[key], abs=1e-9), key
    # every stage trained in both processes; the checkpoints are rank 0's alone
    log = (dir2 / "log.txt").read_text()
    assert log.count("stage2 epoch 2:") == 1
    assert not list(dir2.rglob("*.tmp*"))
