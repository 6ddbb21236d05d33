"""Plugin loading through the ``crsbench`` entry-point group, in real subprocesses.

- ``CRSBENCH_PLUGINS`` limits which entry points are imported;
- a plugin that fails to import, or whose register hook raises, is listed by
  ``crsbench plugins`` with its error and does not break ``crsbench list``;
- starting the CLI imports no torch, transformers or datasets.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys

import pytest

from crsbench.plugins import REGISTRIES

# crsbench's own plugins, from its installed metadata (they use the same entry-point group).
FIRST_PARTY = {ep.name for ep in importlib.metadata.distribution("crsbench").entry_points
               if ep.group == "crsbench"}
HEAVY = ("torch", "transformers", "datasets")

GOOD_PLUGIN = '''
from crsbench import MeanMetric, Model, hookimpl


class EchoModel(Model):
    name = "fake-echo"
    description = "Repeats the context items (fake plugin)."

    def recommend(self, batch):
        return [list(s["context_items"]) for s in batch]


class AlwaysOne(MeanMetric):
    name = "fake_always_one"
    description = "Always 1 (fake plugin)."

    def values(self, units):
        import numpy as np

        return np.ones(len(units)), np.ones(len(units), dtype=bool)


@hookimpl
def register_models(register):
    register(EchoModel)


@hookimpl
def register_metrics(register):
    register(AlwaysOne())
'''

BROKEN_ON_IMPORT = '''
raise RuntimeError("fake_bad_import cannot be imported")
'''

BROKEN_IN_HOOK = '''
from crsbench import MeanMetric, hookimpl


class StillFine(MeanMetric):
    name = "fake_still_fine"
    description = "Registered by a plugin whose other hook fails (fake plugin)."


@hookimpl
def register_models(register):
    raise ValueError("no models in here")


@hookimpl
def register_metrics(register):
    register(StillFine())
'''

CLAIMS_A_TAKEN_NAME = '''
from crsbench import Model, hookimpl


class Impostor(Model):
    name = "popularity"
    description = "Not the real popularity baseline (fake plugin)."


@hookimpl
def register_models(register):
    register(Impostor)
'''


def plugin_blocks(out: str) -> dict[str, list[str]]:
    """``crsbench plugins`` output -> plugin name -> its indented lines."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line and not line.startswith(" "):
            current = line.split()[0]
            blocks[current] = []
        elif current is not None:
            blocks[current].append(line.strip())
    return blocks


def listed(out: str, kind: str) -> dict[str, str]:
    """``crsbench list`` output -> name -> plugin, for one kind."""
    section = re.search(rf"^{kind}:\n((?:  .*\n?)*)", out, flags=re.M)
    assert section, f"no {kind}: section in\n{out}"
    entries = {}
    for line in section.group(1).splitlines():
        match = re.match(r"^  (\S+) .*\[(\S+)\]$", line)
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


@pytest.fixture
def fake_site(fake_dist):
    """One site dir with a good plugin and two broken ones."""
    fake_dist("fake-good", {"fake_good": "fake_good_plugin"}, {"fake_good_plugin": GOOD_PLUGIN})
    fake_dist("fake-bad-import", {"fake_bad_import": "fake_bad_import_plugin"},
              {"fake_bad_import_plugin": BROKEN_ON_IMPORT})
    return fake_dist("fake-bad-hook", {"fake_bad_hook": "fake_bad_hook_plugin"},
                     {"fake_bad_hook_plugin": BROKEN_IN_HOOK})


# -- CRSBENCH_PLUGINS ------------------------------------------------------------------
def test_without_crsbench_plugins_everything_loads(run_crsbench, fake_dist):
    assert {"builtin_metrics", "redial", "baselines"} <= FIRST_PARTY
    site = fake_dist("fake-good", {"fake_good": "fake_good_plugin"}, {"fake_good_plugin": GOOD_PLUGIN})
    proc = run_crsbench("plugins", pythonpath=[site])
    assert proc.returncode == 0, proc.stderr
    assert set(plugin_blocks(proc.stdout)) == FIRST_PARTY | {"fake_good"}
    proc = run_crsbench("list", "models", pythonpath=[site])
    models = listed(proc.stdout, "models")
    assert models["fake-echo"] == "fake_good"
    assert {models[name] for name in ("popularity", "random", "repeat-context")} == {"baselines"}


def test_crsbench_plugins_limits_loading_to_the_named_plugins(run_crsbench):
    proc = run_crsbench("plugins", env={"CRSBENCH_PLUGINS": "baselines"})
    assert proc.returncode == 0, proc.stderr
    assert list(plugin_blocks(proc.stdout)) == ["baselines"]

    proc = run_crsbench("list", env={"CRSBENCH_PLUGINS": "baselines"})
    assert proc.returncode == 0, proc.stderr
    models = listed(proc.stdout, "models")
    assert set(models.values()) == {"baselines"} and {"popularity", "random", "repeat-context"} <= set(models)
    for kind in ("tasks", "metrics", "rewards", "judges"):
        assert re.search(rf"^{kind}:\n  \(none\)$", proc.stdout, flags=re.M), proc.stdout


def test_crsbench_plugins_skips_other_entry_points_without_importing_them(run_crsbench, fake_site):
    # Spaces around names are ignored; the broken plugins are not named, so never imported.
    env = {"CRSBENCH_PLUGINS": " fake_good , redial "}
    proc = run_crsbench("plugins", env=env, pythonpath=[fake_site])
    assert proc.returncode == 0, proc.stderr
    blocks = plugin_blocks(proc.stdout)
    assert set(blocks) == {"fake_good", "redial"}
    assert not any("error" in line for lines in blocks.values() for line in lines)

    proc = run_crsbench("list", env=env, pythonpath=[fake_site])
    assert listed(proc.stdout, "models") == {"fake-echo": "fake_good"}
    assert listed(proc.stdout, "tasks") == {"redial": "redial"}
    assert listed(proc.stdout, "metrics") == {"fake_always_one": "fake_good"}


def test_empty_crsbench_plugins_loads_nothing(run_crsbench):
    proc = run_crsbench("plugins", env={"CRSBENCH_PLUGINS": ""})
    assert proc.returncode == 0 and proc.stdout == ""
    proc = run_crsbench("list", env={"CRSBENCH_PLUGINS": ""})
    assert proc.returncode == 0
    assert proc.stdout.count("(none)") == len(REGISTRIES)


# -- broken plugins ----------------------------------------------------------------------
def test_broken_plugins_are_listed_with_their_errors(run_crsbench, fake_site):
    proc = run_crsbench("plugins", pythonpath=[fake_site])
    assert proc.returncode == 0, proc.stderr
    blocks = plugin_blocks(proc.stdout)
    assert "error: RuntimeError: fake_bad_import cannot be imported" in blocks["fake_bad_import"]
    assert "error: register_models: ValueError: no models in here" in blocks["fake_bad_hook"]
    # The plugin that failed in one hook still shows the hooks it implements.
    assert "hooks: register_metrics, register_models" in blocks["fake_bad_hook"]
    assert not [line for line in blocks["fake_good"] if line.startswith("error")]
    for name in FIRST_PARTY:
        assert not [line for line in blocks[name] if line.startswith("error")], (name, blocks[name])
    assert re.search(r"^fake_bad_hook  \(fake-bad-hook 0\.1\)  module=fake_bad_hook_plugin$", proc.stdout,
                     flags=re.M)


def test_crsbench_list_works_despite_broken_plugins(run_crsbench, fake_site):
    proc = run_crsbench("list", pythonpath=[fake_site])
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    models = listed(proc.stdout, "models")
    assert models["popularity"] == "baselines" and models["fake-echo"] == "fake_good"
    assert listed(proc.stdout, "tasks") == {"redial": "redial", "inspired": "inspired"}
    metrics = listed(proc.stdout, "metrics")
    assert metrics["recall@10"] == "builtin_metrics" and metrics["fake_always_one"] == "fake_good"
    # The hook that did not fail still registered its metric.
    assert metrics["fake_still_fine"] == "fake_bad_hook"
    assert "fake_bad_import" not in proc.stdout


def test_a_missing_module_is_an_error_not_a_crash(run_crsbench, fake_dist):
    site = fake_dist("fake-missing", {"fake_missing": "no_such_module_anywhere"}, {})
    proc = run_crsbench("plugins", pythonpath=[site])
    assert proc.returncode == 0, proc.stderr
    assert "error: ModuleNotFoundError: No module named 'no_such_module_anywhere'" in \
        plugin_blocks(proc.stdout)["fake_missing"]
    assert run_crsbench("list", "tasks", pythonpath=[site]).returncode == 0


def test_a_name_registered_twice_is_refused(run_crsbench, fake_dist):
    """A third-party plugin claiming a first-party model name: the first-party plugin keeps it,
    the attempt is reported against the third-party one (never silently replaced)."""
    site = fake_dist("fake-impostor", {"fake_impostor": "fake_impostor_plugin"},
                     {"fake_impostor_plugin": CLAIMS_A_TAKEN_NAME})
    proc = run_crsbench("plugins", pythonpath=[site])
    assert proc.returncode == 0, proc.stderr
    blocks = plugin_blocks(proc.stdout)
    refused = {name: line for name, lines in blocks.items() for line in lines
               if line.startswith(("refused", "error"))}
    assert refused == {"fake_impostor": "refused: model 'popularity': already registered by plugin 'baselines'"}

    proc = run_crsbench("list", "models", pythonpath=[site])
    assert proc.returncode == 0
    assert listed(proc.stdout, "models")["popularity"] == "baselines"


# -- the import rule ---------------------------------------------------------------------
CHECK_HEAVY = f"""
import json, sys
from crsbench.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))
"""


@pytest.mark.parametrize("args", [["list"], ["plugins"], ["--help"]], ids=" ".join)
def test_starting_the_cli_imports_no_heavy_library(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CRSBENCH_PLUGINS"}  # every plugin loads
    proc = subprocess.run([sys.executable, "-c", CHECK_HEAVY, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    if args == ["list"]:
        assert "redial" in proc.stdout and "popularity" in proc.stdout  # the plugins did load
