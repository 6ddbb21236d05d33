"""Name lookup lives in the plugin registry (``PluginRegistry.get`` / ``crsbench.plugins.lookup``),
so plugins and core modules find a model, task, reward or judge without importing the runner."""
from __future__ import annotations

import pytest

from crsbench import Reward, UserError, hookimpl


class TinyReward(Reward):
    name = "tiny-length"
    description = "test reward"

    def score(self, samples, responses):
        return [float(len(r)) for r in responses]


class Plugin:
    @hookimpl
    def register_rewards(self, register):
        register(TinyReward)


def test_get_returns_the_entry_and_records_it_as_used(isolated_registry):
    from crsbench.plugins import lookup

    isolated_registry.register_plugin(Plugin(), "tiny")
    entry = isolated_registry.get("rewards", "tiny-length")
    assert entry.obj is TinyReward and entry.plugin == "tiny"
    assert isolated_registry.used == {"rewards": {"tiny-length"}}  # for the result's provenance
    assert lookup("rewards", "tiny-length") is entry  # the process-wide registry (isolated here)


def test_an_unknown_name_is_a_user_error_with_a_suggestion(isolated_registry):
    isolated_registry.register_plugin(Plugin(), "tiny")
    with pytest.raises(UserError) as exc:
        isolated_registry.get("rewards", "tiny-lenght")
    assert str(exc.value) == ("unknown reward 'tiny-lenght'; did you mean 'tiny-length'? "
                              "(known: tiny-length; see 'crsbench list rewards')")
    with pytest.raises(UserError, match=r"unknown judge 'x' \(known: none; see 'crsbench list judges'\)"):
        isolated_registry.get("judges", "x")
    assert isolated_registry.used == {}


def test_the_runner_keeps_the_name_for_old_callers():
    from crsbench import plugins, runner

    assert runner.lookup is plugins.lookup
