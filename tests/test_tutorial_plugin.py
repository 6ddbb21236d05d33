"""The tutorial's plugin is real: docs/examples/crsbench-example-plugin installs and runs.

The package is installed (from a copy, so no build files land in docs/) with
``pip install --no-deps --no-build-isolation --no-index --target DIR``, and crsbench runs in
subprocesses with DIR on PYTHONPATH, so the plugin is found through its entry point exactly
as it would be after ``pip install``. docs/tutorial.md must show every file of the example
verbatim, so the page cannot drift from the code.
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
EXAMPLE = REPO_ROOT / "docs" / "examples" / "crsbench-example-plugin"
TUTORIAL = REPO_ROOT / "docs" / "tutorial.md"
HEAVY = ("torch", "transformers", "datasets")


def example_files() -> dict[str, str]:
    return package_files(EXAMPLE)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example plugin installed into a private target directory; returns that directory."""
    return install_copy(EXAMPLE, tmp_path_factory.mktemp("example_plugin"))


# -- the tutorial shows exactly the example's code --------------------------------------------
def test_the_example_has_the_expected_files():
    assert set(example_files()) == {"pyproject.toml", "crsbench_example/__init__.py",
                                    "tests/test_crsbench_example.py"}


@pytest.mark.parametrize("rel", sorted(example_files()))
def test_every_example_file_appears_verbatim_in_the_tutorial(rel):
    text = TUTORIAL.read_text(encoding="utf-8")
    assert example_files()[rel] in code_blocks(text), \
        f"docs/tutorial.md must contain {rel} verbatim as one code block (update the page or the example)"
    assert rel.split("/")[-1] in text


def test_the_tutorial_names_the_commands_a_plugin_author_runs():
    text = TUTORIAL.read_text(encoding="utf-8")
    for command in ("pip install -e .", "crsbench list", "crsbench plugins",
                    "crsbench run example-cooccurrence --task redial --limit 50",
                    "crsbench leaderboard publish runs/example-cooccurrence_redial_default_s0"):
        assert command in text, command
    assert "[project.entry-points.crsbench]" in text and "plugin-api.md" in text


# -- installed, it is found, listed and runs -----------------------------------------------
def test_the_installed_plugin_is_listed(installed, run_crsbench):
    proc = run_crsbench("list", "models", pythonpath=[installed])
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^  example-cooccurrence +Items that co-occur .*\[example\]$", proc.stdout, flags=re.M), \
        proc.stdout

    proc = run_crsbench("list", pythonpath=[installed])
    assert proc.returncode == 0, proc.stderr
    # The `crsbench list` lines the tutorial quotes for the example are the real ones.
    quoted = [line for line in TUTORIAL.read_text(encoding="utf-8").splitlines()
              if re.match(r"^  example[-_]\w+ ", line) and line.endswith("[example]")]  # not the task section's
    assert len(quoted) == 3
    for line in quoted:
        assert line in proc.stdout.splitlines(), line

    proc = run_crsbench("plugins", pythonpath=[installed])
    block = re.search(r"^example  \(.*\n((?:  .*\n)*)", proc.stdout, flags=re.M)
    assert block and block.group(0).startswith("example  (crsbench-example-plugin 0.1.0)  module=crsbench_example\n")
    assert block.group(1) == "  hooks: register_metrics, register_models, register_rewards\n"  # no error line

    # The tutorial's way to look at the plugin alone.
    proc = run_crsbench("list", env={"CRSBENCH_PLUGINS": "example,redial,builtin_metrics"},
                        pythonpath=[installed])
    assert proc.returncode == 0 and "[baselines]" not in proc.stdout
    assert "example-cooccurrence" in proc.stdout and "redial" in proc.stdout


def test_listing_with_the_plugin_imports_no_heavy_library(installed, tmp_path):
    code = ("import json, sys\nfrom crsbench.cli import main\ntry:\n    main(['list'])\nexcept SystemExit:\n"
            f"    pass\nprint(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    env = {"PYTHONPATH": str(installed), **{k: v for k, v in os.environ.items()
                                             if k not in ("PYTHONPATH", "CRSBENCH_PLUGINS")}}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "example-cooccurrence" in proc.stdout
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_the_example_runs_on_redial(installed, run_crsbench, tmp_path):
    proc = run_crsbench("run", "example-cooccurrence", "--task", "redial", "--limit", "20", "--n-bootstrap", "50",
                        "--device", "cpu", "--no-progress", "--output-dir", tmp_path / "runs",
                        pythonpath=[installed])
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "runs" / "example-cooccurrence_redial_default_s0_n20"
    assert f"run directory: {run_dir}" in proc.stdout
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))

    assert result["model"] | {"config": None} == {"name": "example-cooccurrence", "version": "0.1.0",
                                                  "plugin": "example", "profile": "default",
                                                  "distribution": "crsbench-example-plugin",
                                                  "distribution_version": "0.1.0",
                                                  "config": None, "overrides": {}, "generates": False}
    # what a leaderboard row needs to say what to install
    assert result["plugins"]["model"] == {"entry_point": "example", "module": "crsbench_example",
                                          "distribution": "crsbench-example-plugin", "version": "0.1.0",
                                          "names": ["example-cooccurrence"]}
    assert {r["entry_point"] for r in result["plugins"]["metrics"]} == {"builtin_metrics", "example"}
    assert result["model"]["config"] == {"max_context": 5, "top_k": 200}
    assert result["task"]["name"] == "redial" and result["evaluation"]["limit"] == 20
    metrics = result["metrics"]
    for key in ("standard/recall@10", "standard/example_coverage", "dedup/example_coverage"):
        assert key in metrics, sorted(metrics)
        cell = metrics[key]
        assert 0.0 <= cell["value"] <= 1.0 and cell["n"] > 0
        assert cell["ci_low"] <= cell["value"] <= cell["ci_high"]
    # Coverage counts targets in the top 100, so it is at least recall@50 on the same targets.
    assert metrics["standard/example_coverage"]["value"] >= metrics["standard/recall@50"]["value"]
    assert not [key for key in metrics if key.startswith("generation/")]
    assert "example-cooccurrence: " in (run_dir / "log.txt").read_text(encoding="utf-8")


def test_the_examples_own_tests_pass(installed, tmp_path):
    tests = tmp_path / "tests"
    shutil.copytree(EXAMPLE / "tests", tests, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CRSBENCH_PLUGINS")}
    env["PYTHONPATH"] = str(installed)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b3 passed\b", proc.stdout), proc.stdout
