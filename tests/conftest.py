"""Shared fixtures.

- ``run_crsbench(*args, env=None, pythonpath=(), cwd=None)``: the ``crsbench`` CLI in a fresh
  subprocess (entry points loaded for real); returns ``CompletedProcess`` with text output.
  ``CRSBENCH_PLUGINS`` is removed from the environment unless ``env`` sets it.
- ``fake_dist(name, entry_points, modules)``: writes a dist-info (METADATA +
  entry_points.txt) and module files into a tmp dir, so importlib.metadata finds crsbench
  entry points when the dir is on PYTHONPATH. Returns the dir.
- ``isolated_registry``: a fresh, empty ``PluginRegistry`` installed as the process-wide
  registry (``crsbench.plugins._registry``); CLI commands added meanwhile are removed again.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CLI_CODE = "import sys; from crsbench.cli import main; main(sys.argv[1:])"


@pytest.fixture
def run_crsbench(tmp_path):
    def run(*args, env=None, pythonpath=(), cwd=None, timeout=600):
        full_env = {k: v for k, v in os.environ.items() if k != "CRSBENCH_PLUGINS"}
        full_env.update(env or {})
        paths = [str(p) for p in pythonpath] + [p for p in [os.environ.get("PYTHONPATH")] if p]
        if paths:
            full_env["PYTHONPATH"] = os.pathsep.join(paths)
        return subprocess.run([sys.executable, "-c", CLI_CODE, *map(str, args)], cwd=cwd or tmp_path,
                              env=full_env, capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def fake_dist(tmp_path):
    def make(name: str, entry_points: dict[str, str], modules: dict[str, str], version: str = "0.1") -> Path:
        root = tmp_path / "site"
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[crsbench]\n{lines}")
        for module, source in modules.items():
            (root / f"{module}.py").write_text(source)
        return root

    return make


@pytest.fixture
def isolated_registry(monkeypatch):
    from crsbench import plugins
    from crsbench.cli import cli

    registry = plugins.PluginRegistry()
    monkeypatch.setattr(plugins, "_registry", registry)
    monkeypatch.setattr(cli, "commands", dict(cli.commands))
    return registry
