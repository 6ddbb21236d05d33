"""A third-party package cannot hijack first-party names, and results say what to install.

The package below is built and installed for real (``pip install --target``, as the tutorial's
plugin is in test_tutorial_plugin.py), so its entry points reach crsbench exactly as after
``pip install``. Its distribution name sorts before every other, and it has two entry points:
``brokenhook`` registers a model called ``popularity`` (taken by the first-party
``baselines``) and one model of its own; ``raiser``'s hook raises.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "aaa-hijack"
version = "2.5.0"
dependencies = []

[tool.setuptools]
py-modules = ["aaa_hijack", "aaa_raiser"]

[project.entry-points.crsbench]
brokenhook = "aaa_hijack"
raiser = "aaa_raiser"
"""

HIJACK = '''
from crsbench import Model, hookimpl


class Impostor(Model):
    name = "popularity"
    description = "Not the real popularity baseline."

    def recommend(self, batch):
        return [[] for _ in batch]


class Echo(Model):
    name = "hijack-echo"
    description = "Repeats the context items."

    def recommend(self, batch):
        return [list(reversed(s["context_items"])) for s in batch]


@hookimpl
def register_models(register):
    register(Impostor)   # refused: baselines registered it first
    register(Echo)       # still registered
'''

RAISER = '''
from crsbench import hookimpl


@hookimpl
def register_models(register):
    raise RuntimeError("raiser is broken")
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hijack")
    src, target = root / "src", root / "site"
    src.mkdir()
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "aaa_hijack.py").write_text(textwrap.dedent(HIJACK))
    (src / "aaa_raiser.py").write_text(textwrap.dedent(RAISER))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "--disable-pip-version-check", "--quiet", "--target", str(target),
                           str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def blocks(out: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line and not line.startswith(" "):
            current = line.split("  (")[0]
            found[current] = []
        elif current:
            found[current].append(line.strip())
    return found


def test_plugins_reports_the_refusal_against_the_impostor(site, run_crsbench):
    proc = run_crsbench("plugins", pythonpath=[site])
    assert proc.returncode == 0, proc.stderr
    found = blocks(proc.stdout)
    names = list(found)
    # precedence: crsbench's own plugins first, then the third-party ones
    first_third_party = names.index("brokenhook")
    assert {"baselines", "builtin_metrics", "redial"} <= set(names[:first_third_party])
    assert names[first_third_party:] == ["brokenhook", "raiser"]
    assert "refused: model 'popularity': already registered by plugin 'baselines'" in found["brokenhook"]
    assert not [line for line in found["baselines"] if line.startswith(("refused", "error"))]
    assert "error: register_models: RuntimeError: raiser is broken" in found["raiser"]
    assert "brokenhook  (aaa-hijack 2.5.0)  module=aaa_hijack" in proc.stdout


def test_first_party_models_stay_first_party_and_runnable(site, run_crsbench, tmp_path):
    proc = run_crsbench("list", "models", pythonpath=[site])
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert lines["popularity"].endswith("[baselines]") and lines["repeat-context"].endswith("[baselines]")
    assert lines["hijack-echo"].endswith("[brokenhook]")  # its other registration went ahead

    for model in ("popularity", "repeat-context", "hijack-echo"):
        proc = run_crsbench("run", model, "--task", "redial", "--limit", "5", "--n-bootstrap", "10",
                            "--device", "cpu", "--no-progress", "--output-dir", tmp_path / "runs",
                            pythonpath=[site])
        assert proc.returncode == 0, proc.stderr
        # `crsbench run` says so too, once per line (no second "INFO:crsbench:" copy)
        assert "plugin 'brokenhook' (aaa-hijack): model 'popularity': already registered by plugin " \
               "'baselines'; refused" in proc.stderr
        assert "INFO:crsbench:" not in proc.stderr and proc.stderr.count("wrote ") == 1
        result = json.loads(next((tmp_path / "runs").glob(f"{model}_redial_*/result.json")).read_text())
        plugins = result["plugins"]
        expected = ("aaa-hijack", "2.5.0", "brokenhook") if model == "hijack-echo" else \
            ("crsbench", result["crsbench_version"], "baselines")
        assert (plugins["model"]["distribution"], plugins["model"]["version"],
                plugins["model"]["entry_point"]) == expected
        assert result["model"]["plugin"] == expected[2] and result["model"]["distribution"] == expected[0]
        assert plugins["task"]["entry_point"] == "redial" and plugins["task"]["distribution"] == "crsbench"
        [metrics_plugin] = plugins["metrics"]
        assert metrics_plugin["entry_point"] == "builtin_metrics" and "recall@10" in metrics_plugin["names"]
    assert json.loads((tmp_path / "runs" / "popularity_redial_default_s0_n5" / "result.json").read_text()
                      )["metrics"]["standard/recall@50"]["value"] > 0  # the real baseline, not the impostor


def test_an_entry_point_name_of_a_first_party_plugin_is_not_taken_over(run_crsbench, fake_dist):
    site = fake_dist("aaa-clash", {"baselines": "aaa_clash"},
                     {"aaa_clash": "raise RuntimeError('must never be imported')\n"})
    proc = run_crsbench("plugins", pythonpath=[site])
    assert proc.returncode == 0, proc.stderr
    found = blocks(proc.stdout)
    assert found["baselines"] == ["hooks: register_models"]
    assert found["baselines (aaa-clash)"] == [
        "hooks: -", "error: entry point name 'baselines' is already used by crsbench; not loaded"]
    assert "must never be imported" not in proc.stdout
    proc = run_crsbench("list", "models", pythonpath=[site])
    assert "[baselines]" in proc.stdout


# -- in process ----------------------------------------------------------------------------
def test_refusal_keeps_the_rest_of_a_plugins_registrations(isolated_registry):
    from crsbench import Model, hookimpl

    def model(name):
        return type(name.title(), (Model,), {"name": name})

    class First:
        @hookimpl
        def register_models(self, register):
            register(model("shared"))

    class Second:
        @hookimpl
        def register_models(self, register):
            register(model("shared"))
            register(model("own"))
            register(model("shared"))

    isolated_registry.register_plugin(First(), "first")
    isolated_registry.register_plugin(Second(), "second")
    models = isolated_registry.models()
    assert {name: e.plugin for name, e in models.items()} == {"shared": "first", "own": "second"}
    assert isolated_registry.plugins["second"].refused == [
        "model 'shared': already registered by plugin 'first'"] * 2
    assert isolated_registry.plugins["second"].error is None and isolated_registry.plugins["first"].refused == []
    # unregistering the first lets the second's registration stand
    isolated_registry.unregister_plugin("first")
    assert isolated_registry.models()["shared"].plugin == "second"
    assert isolated_registry.plugins["second"].refused == ["model 'shared': already registered by plugin 'second'"]


def test_a_run_that_would_compute_no_metric_is_an_error(run_crsbench, tmp_path):
    proc = run_crsbench("run", "popularity", "--task", "redial", "--limit", "2", "--output-dir", tmp_path / "r",
                        env={"CRSBENCH_PLUGINS": "redial,baselines"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: this run would compute no metric")
    assert "'builtin_metrics', which is not loaded" in lines[0] and "CRSBENCH_PLUGINS='redial,baselines'" in lines[0]
    assert not (tmp_path / "r").exists()  # stopped before anything was written


def test_publish_refuses_a_result_whose_plugin_has_no_version(isolated_registry, tmp_path, monkeypatch):
    from crsbench import Model, hookimpl
    from crsbench.errors import UserError
    from crsbench.leaderboard import publish
    from crsbench.metrics import plugin as builtin_metrics
    from crsbench.runner import run
    from crsbench_tasks.redial import plugin as redial

    class Unpackaged(Model):
        name = "unpackaged"

        def recommend(self, batch):
            return [list(s["context_items"]) for s in batch]

    class Plugin:
        @hookimpl
        def register_models(self, register):
            register(Unpackaged)

    isolated_registry.register_plugin(redial, "redial", _dist_info("redial"))
    isolated_registry.register_plugin(builtin_metrics, "builtin_metrics", _dist_info("builtin_metrics"))
    isolated_registry.register_plugin(Plugin(), "loose")
    run_dir = run("unpackaged", "redial", limit=3, n_bootstrap=5, progress=False, output_dir=tmp_path / "runs")
    result = json.loads((run_dir / "result.json").read_text())
    model = result["plugins"]["model"]
    assert (model["entry_point"], model["distribution"], model["version"]) == ("loose", None, None)
    assert result["plugins"]["task"]["version"] == "0.1.0"
    with pytest.raises(UserError, match=r"no distribution version \(model plugin 'loose'\)"):
        publish(run_dir, tmp_path / "lb")
    assert not (tmp_path / "lb").exists()


def _dist_info(name):
    from crsbench.plugins import PluginInfo

    return PluginInfo(name, name, "crsbench", "0.1.0")
