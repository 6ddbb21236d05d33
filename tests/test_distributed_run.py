"""A whole `crsbench run` in 2 CPU processes (gloo, started by torchrun: `accelerate launch
--cpu` starts one process unless MPI is set up) gives the metrics of one process, and only
rank 0 writes the run directory.

The frozen LM is a given local model (as in the paper profile): the CPU profile's own LM
pre-training uses dropout, whose masks differ with the number of processes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest


LAUNCH = ["--nproc_per_node", "2", "--standalone", "-m", "crsbench"]


def launcher(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun, "torch's launcher is installed with the project"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "CRSBENCH_CACHE_DIR": str(tmp_path / "cache")}
    return torchrun, env


@pytest.mark.slow
def test_two_process_run_matches_one_process(tmp_path):
    from crsbench_plugins.ecr.tiny_models import write_tiny_backbones

    launch, env = launcher(tmp_path)
    lm, _ = write_tiny_backbones(tmp_path / "tiny")
    args = ["run", "unicrs", "--task", "redial", "--profile", "smoke", "--limit", "6", "--n-bootstrap", "20",
            "--device", "cpu", "--no-progress", "--set", f"lm.backbone={lm}"]
    one = subprocess.run([sys.executable, "-m", "crsbench", *args, "--output-dir", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([launch, *LAUNCH, *args, "--output-dir", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes train" in two.stderr and "WORLD_SIZE" not in env  # really two; rank 0 alone logs
    assert two.stderr.count("stage2 epoch 1:") == 1

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


@pytest.mark.slow
def test_a_one_process_model_says_so_under_a_launch_and_writes_nothing(tmp_path):
    launch, env = launcher(tmp_path)
    proc = subprocess.run([launch, *LAUNCH, "run", "ecr-rl", "--task", "redial", "--profile", "smoke",
                           "--limit", "6", "--device", "cpu", "--no-progress", "--output-dir", str(tmp_path / "runs")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert errors and all("cannot train in 2 processes" in line and "reuses that run's ECR checkpoints" in line
                          for line in errors), proc.stderr[-2000:]
    # torchrun reports its failed children with a traceback of its own; crsbench's code is in none
    assert "crsbench/runner.py" not in proc.stderr and "crsbench/cli.py" not in proc.stderr
    assert not (tmp_path / "runs").exists()
