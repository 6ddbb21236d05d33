"""The same command gives the same numbers.

- the backward of advanced indexing (``ent[entity_ids]`` in ECR's prompt encoder) is
  ``index_put_(accumulate=True)``, which PyTorch's CPU kernel adds in parallel, in any order,
  above 32,768 elements with more than one thread; with ``seed_everything(seed,
  deterministic=True)`` (what ECR's training calls) repeated backward passes with 2 threads
  give bit-identical gradients;
- ``ecr`` on the smoke profile, run twice from clean run directories in fresh processes with
  2 torch threads (the second run finds the first run's text-encoder caches), writes the
  same value for every metric in result.json.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _index_backward_grads(n_repeats: int) -> set[bytes]:
    import torch

    torch.manual_seed(0)
    table = torch.randn(2000, 64, requires_grad=True)
    ids = torch.randint(0, 2000, (64, 32))      # 64 x 32 x 64 = 131,072 gathered elements
    weight = torch.randn(64, 32, 64)
    out = set()
    for _ in range(n_repeats):
        table.grad = None
        (table[ids] * weight).sum().backward()
        out.add(table.grad.numpy().tobytes())
    return out


def test_indexed_backward_is_bit_identical_with_two_threads():
    import torch

    from crsbench.seeding import seed_everything

    threads, was = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        torch.set_num_threads(2)
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert len(_index_backward_grads(12)) == 1
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was)


RUN = """
import json, sys
from crsbench.runner import run
d = run("ecr", output_dir=sys.argv[1], task_name="redial", profile="smoke", limit=4, n_bootstrap=10,
        progress=False)
print(d)
"""


@pytest.mark.slow
def test_ecr_smoke_twice_gives_identical_metrics(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", CRSBENCH_CACHE_DIR=str(tmp_path / "cache"))
    metrics = []
    for name in ("first", "second"):
        out = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / name)], env=env, capture_output=True,
                             text=True, check=True)
        run_dir = out.stdout.strip().splitlines()[-1]
        result = json.loads(open(os.path.join(run_dir, "result.json")).read())
        metrics.append({k: v for k, v in result["metrics"].items()})
        assert result["extra"]["stages"]["stage2_recommendation"]["steps"] > 0
    assert metrics[0].keys() == metrics[1].keys() and len(metrics[0]) > 10
    for key in metrics[0]:
        assert metrics[0][key] == metrics[1][key], key  # value and confidence interval, exactly
