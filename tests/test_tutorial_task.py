"""The tutorial's task plugin is real: docs/examples/crsbench-example-task installs, and
first-party models (a baseline, UniCRS and ECR) run on it through the Task API only.

Installed from a copy with ``pip install --no-deps --no-build-isolation --no-index --target
DIR``; crsbench runs in subprocesses with DIR on PYTHONPATH, so the task is found through its
entry point. docs/tutorial.md shows every file of the example verbatim.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from example_packages import code_blocks, install_copy, package_files

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "docs" / "examples" / "crsbench-example-task"
TUTORIAL = REPO_ROOT / "docs" / "tutorial.md"


def example_files() -> dict[str, str]:
    return package_files(EXAMPLE)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    return install_copy(EXAMPLE, tmp_path_factory.mktemp("example_task"))


def test_the_example_has_the_expected_files():
    assert set(example_files()) == {"pyproject.toml", "crsbench_example_task/__init__.py",
                                    "crsbench_example_task/books.json", "tests/test_crsbench_example_task.py"}


@pytest.mark.parametrize("rel", sorted(example_files()))
def test_every_example_file_appears_verbatim_in_the_tutorial(rel):
    text = TUTORIAL.read_text(encoding="utf-8")
    assert example_files()[rel] in code_blocks(text), \
        f"docs/tutorial.md must contain {rel} verbatim as one code block (update the page or the example)"


def test_the_installed_task_is_listed_as_the_tutorial_shows(installed, run_crsbench):
    proc = run_crsbench("list", "tasks", pythonpath=[installed])
    assert proc.returncode == 0, proc.stderr
    quoted = [line for line in TUTORIAL.read_text(encoding="utf-8").splitlines() if line.startswith("  example-books ")]
    assert len(quoted) == 1 and quoted[0] in proc.stdout.splitlines(), proc.stdout


def test_the_examples_own_tests_pass(installed, tmp_path):
    tests = tmp_path / "tests"
    shutil.copytree(EXAMPLE / "tests", tests, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CRSBENCH_PLUGINS")}
    env["PYTHONPATH"] = str(installed)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b4 passed\b", proc.stdout), proc.stdout


def run_on_books(run_crsbench, installed, tmp_path, *args) -> dict:
    proc = run_crsbench("run", *args, "--task", "example-books", "--device", "cpu", "--no-progress",
                        "--n-bootstrap", "50", "--output-dir", tmp_path / "runs", pythonpath=[installed],
                        env={"CRSBENCH_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next((tmp_path / "runs").glob("*/result.json")).read_text(encoding="utf-8"))


def test_a_baseline_runs_on_the_example_task(installed, run_crsbench, tmp_path):
    result = run_on_books(run_crsbench, installed, tmp_path, "popularity")
    assert result["task"]["name"] == "example-books" and result["task"]["version"] == "1.0"
    assert result["task"]["data"]["variant"] == "bundled" and len(result["task"]["data"]["sha256"]) == 64
    assert result["plugins"]["task"]["distribution"] == "crsbench-example-task"
    metrics = result["metrics"]
    assert metrics["standard/recall@10"]["n"] == 4  # four test targets, every catalogue item in the top 10
    assert metrics["standard/recall@10"]["value"] == 1.0
    assert not [k for k in metrics if k.split("/")[-1] in ("rt@10", "auc")]  # no feedback: not computed


@pytest.mark.slow
@pytest.mark.parametrize("model", ["unicrs", "ecr"])
def test_graph_models_run_on_the_example_task(model, installed, run_crsbench, tmp_path):
    result = run_on_books(run_crsbench, installed, tmp_path, model, "--profile", "smoke")
    assert result["model"]["name"] == model and result["task"]["name"] == "example-books"
    stages = result["extra"]["stages"]
    assert len(stages["stage2_recommendation"]["epoch_loss"]) >= 1
    assert stages["feedback_weighting"] == ("off: the task has no feedback" if model == "ecr" else "off")
    assert "standard/recall@10" in result["metrics"] and "generation/bleu-1" in result["metrics"]
