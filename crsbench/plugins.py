"""Plugin discovery and registration.

Plugins come from the ``crsbench`` entry-point group (first-party ones too). Set
``CRSBENCH_PLUGINS=name1,name2`` to load only those entry points (debugging, tests).
A plugin that fails to import or to register is recorded with its error and skipped; it
never breaks the CLI.
"""
from __future__ import annotations

import importlib.metadata
import os
import traceback
from dataclasses import dataclass, field
from typing import Any

import pluggy

from crsbench import hookspecs

ENTRY_POINT_GROUP = "crsbench"
PLUGINS_ENV = "CRSBENCH_PLUGINS"
REGISTRIES = ("models", "tasks", "metrics", "rewards", "judges")


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Entry:
    """One registered object and the plugin that registered it."""

    name: str
    obj: Any
    plugin: str


class PluginRegistry:
    """Holds the plugin manager and everything the plugins registered."""

    def __init__(self):
        self.pm = pluggy.PluginManager("crsbench")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._collected: dict[str, dict[str, Entry]] | None = None

    # -- loading -------------------------------------------------------------------
    def load_entry_points(self) -> None:
        wanted = os.environ.get(PLUGINS_ENV)
        allowed = {n.strip() for n in wanted.split(",") if n.strip()} if wanted is not None else None
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.plugins or (allowed is not None and ep.name not in allowed):
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(ep.name, ep.value, dist.name if dist else None, dist.version if dist else None)
            self.plugins[ep.name] = info
            try:
                module = ep.load()
                self.register_plugin(module, ep.name, info)
            except Exception as exc:  # a broken plugin must not break the CLI
                info.error = f"{type(exc).__name__}: {exc}"

    def register_plugin(self, plugin: Any, name: str, info: PluginInfo | None = None) -> None:
        """Register a plugin object or module (tests use this directly)."""
        info = info or PluginInfo(name, getattr(plugin, "__name__", repr(plugin)))
        self.plugins[name] = info
        self.pm.register(plugin, name=name)
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
        self._collected = None

    def unregister_plugin(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.plugins.pop(name, None)
        self._collected = None

    # -- collecting --------------------------------------------------------------
    def _call_each(self, hook_name: str, store: dict[str, Entry], key) -> None:
        """Call every implementation separately so one failing plugin is isolated."""
        hook = getattr(self.pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):  # registration order
            plugin_name = impl.plugin_name

            def register(obj, _plugin=plugin_name):
                name = key(obj)
                if not name:
                    raise ValueError(f"{obj!r} has no name")
                if name in store:
                    raise ValueError(
                        f"{hook_name}: {name!r} is already registered by plugin {store[name].plugin!r}")
                store[name] = Entry(name, obj, _plugin)

            try:
                impl.function(register)
            except Exception as exc:
                info = self.plugins.setdefault(plugin_name, PluginInfo(plugin_name, plugin_name))
                info.error = f"{hook_name}: {type(exc).__name__}: {exc}"
                if os.environ.get("CRSBENCH_DEBUG"):
                    traceback.print_exc()

    def collected(self) -> dict[str, dict[str, Entry]]:
        if self._collected is None:
            out: dict[str, dict[str, Entry]] = {r: {} for r in REGISTRIES}
            for registry in REGISTRIES:
                self._call_each(f"register_{registry}", out[registry], key=lambda o: getattr(o, "name", None))
            self._collected = out
        return self._collected

    def models(self) -> dict[str, Entry]:
        return self.collected()["models"]

    def tasks(self) -> dict[str, Entry]:
        return self.collected()["tasks"]

    def metrics(self) -> dict[str, Entry]:
        return self.collected()["metrics"]

    def rewards(self) -> dict[str, Entry]:
        return self.collected()["rewards"]

    def judges(self) -> dict[str, Entry]:
        return self.collected()["judges"]

    def metrics_objects(self) -> dict:
        """Metric name -> metric instance."""
        return {name: entry.obj for name, entry in self.metrics().items()}

    def add_commands(self, cli) -> None:
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):
            try:
                impl.function(cli)
            except Exception as exc:
                self.plugins[impl.plugin_name].error = f"register_commands: {type(exc).__name__}: {exc}"


_registry: PluginRegistry | None = None


def get_registry() -> PluginRegistry:
    """The process-wide registry, loading entry points on first use."""
    global _registry
    if _registry is None:
        _registry = PluginRegistry()
        _registry.load_entry_points()
    return _registry


def reset_registry() -> None:
    """Forget loaded plugins (tests)."""
    global _registry
    _registry = None
