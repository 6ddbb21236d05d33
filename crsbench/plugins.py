"""Plugin discovery and registration.

Plugins come from the ``crsbench`` entry-point group (first-party ones too). Set
``CRSBENCH_PLUGINS=name1,name2`` to load only those entry points (debugging, tests).
A plugin that fails to import or to register is recorded with its error and skipped; it
never breaks the CLI.

Precedence is deterministic: crsbench's own entry points load first, then third-party
ones sorted by distribution name and entry-point name, then plugins registered at run time
(tests). When two plugins register the same name, the first in that order keeps it; every
later registration of the name is refused and recorded against the plugin that attempted
it (``PluginInfo.refused``), and that plugin's other registrations go ahead.
"""
from __future__ import annotations

import difflib
import importlib.metadata
import os
import traceback
from dataclasses import dataclass, field
from typing import Any

import pluggy

from crsbench import hookspecs
from crsbench.errors import UserError

ENTRY_POINT_GROUP = "crsbench"
PLUGINS_ENV = "CRSBENCH_PLUGINS"
FIRST_PARTY_DISTRIBUTION = "crsbench"
REGISTRIES = ("models", "tasks", "metrics", "rewards", "judges", "rubrics", "judge_benchmarks")


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    refused: list[str] = field(default_factory=list)  # registrations refused (name already taken)

    @property
    def first_party(self) -> bool:
        return self.distribution == FIRST_PARTY_DISTRIBUTION

    def provenance(self) -> dict[str, Any]:
        """What a result file records about the plugin: enough to say what to install."""
        return {"entry_point": self.name, "module": self.module, "distribution": self.distribution,
                "version": self.version}


@dataclass
class Entry:
    """One registered object and the plugin that registered it."""

    name: str
    obj: Any
    plugin: str


def _load_order(entry_points) -> list:
    """First-party entry points first, then third-party by (distribution, entry-point name)."""
    def key(ep):
        dist = getattr(ep, "dist", None)
        dist_name = dist.name if dist else ""
        return (dist_name != FIRST_PARTY_DISTRIBUTION, dist_name.lower(), ep.name, ep.value)
    return sorted(entry_points, key=key)


class PluginRegistry:
    """Holds the plugin manager and everything the plugins registered."""

    def __init__(self):
        self.pm = pluggy.PluginManager("crsbench")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}  # in precedence order
        self._collected: dict[str, dict[str, Entry]] | None = None
        self.used: dict[str, set[str]] = {}  # kind -> names looked up with use(), for provenance

    # -- loading -------------------------------------------------------------------
    def load_entry_points(self) -> None:
        wanted = os.environ.get(PLUGINS_ENV)
        allowed = {n.strip() for n in wanted.split(",") if n.strip()} if wanted is not None else None
        for ep in _load_order(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)):
            if allowed is not None and ep.name not in allowed:
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(ep.name, ep.value, dist.name if dist else None, dist.version if dist else None)
            if ep.name in self.plugins:
                taken = self.plugins[ep.name]
                if (taken.distribution, taken.module) != (info.distribution, info.module):
                    # Same entry-point name from another package: never loaded, but reported.
                    key = f"{ep.name} ({info.distribution})"
                    info.error = (f"entry point name {ep.name!r} is already used by "
                                  f"{taken.distribution or taken.module}; not loaded")
                    self.plugins.setdefault(key, info)
                continue
            self.plugins[ep.name] = info
            try:
                module = ep.load()
                self.register_plugin(module, ep.name, info)
            except Exception as exc:  # a broken plugin must not break the CLI
                info.error = f"{type(exc).__name__}: {exc}"

    def register_plugin(self, plugin: Any, name: str, info: PluginInfo | None = None) -> None:
        """Register a plugin object or module (tests use this directly); it ranks after
        every plugin registered before it."""
        if info is None:
            info = PluginInfo(name, getattr(plugin, "__name__", repr(plugin)))
            dist = getattr(plugin, "__crsbench_distribution__", None)  # optional (name, version)
            if dist:
                info.distribution, info.version = dist
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
    def _record_error(self, plugin_name: str, message: str) -> None:
        info = self.plugins.setdefault(plugin_name, PluginInfo(plugin_name, plugin_name))
        info.error = message if not info.error else f"{info.error}; {message}"

    def _call_each(self, hook_name: str, store: dict[str, Entry], key) -> None:
        """Call every implementation separately, in precedence order, so one failing
        plugin is isolated and the first registrant of a name keeps it."""
        impls = {impl.plugin_name: impl for impl in getattr(self.pm.hook, hook_name).get_hookimpls()}
        kind = hook_name.removeprefix("register_")
        for plugin_name in [n for n in self.plugins if n in impls]:
            info = self.plugins[plugin_name]

            def register(obj, _plugin=plugin_name, _info=info):
                name = key(obj)
                if not name:
                    self._record_error(_plugin, f"{hook_name}: {obj!r} has no name; not registered")
                    return
                if name in store:
                    _info.refused.append(f"{kind[:-1]} {name!r}: already registered by plugin "
                                         f"{store[name].plugin!r}")
                    return
                store[name] = Entry(name, obj, _plugin)

            self._call_isolated(impls[plugin_name], hook_name, register)

    def _call_isolated(self, impl, hook_name: str, register) -> None:
        """One plugin's hook implementation; its exception is recorded, not raised."""
        try:
            impl.function(register)
        except Exception as exc:
            self._record_error(impl.plugin_name, f"{hook_name}: {type(exc).__name__}: {exc}")
            if os.environ.get("CRSBENCH_DEBUG"):
                traceback.print_exc()

    def collected(self) -> dict[str, dict[str, Entry]]:
        if self._collected is None:
            for info in self.plugins.values():  # refusals are recomputed (commands are added once)
                info.refused = [line for line in info.refused if line.startswith("command ")]
            out: dict[str, dict[str, Entry]] = {r: {} for r in REGISTRIES}
            for registry in REGISTRIES:
                self._call_each(f"register_{registry}", out[registry], key=lambda o: getattr(o, "name", None))
            out["report_sections"] = self._collect_report_sections()
            self._collected = out
        return self._collected

    def refusals(self) -> list[str]:
        """One line per refused registration, naming the plugin that attempted it."""
        self.collected()
        return [f"plugin {name!r} ({info.distribution or info.module}): {line}; refused"
                for name, info in self.plugins.items() for line in info.refused]

    def use(self, kind: str, name: str) -> Entry:
        """The registered ``kind`` (e.g. "rewards") called ``name``, recorded as used by this
        run so its plugin appears in the result's provenance. KeyError if unknown."""
        entry = self.collected()[kind][name]
        self.used.setdefault(kind, set()).add(name)
        return entry

    def get(self, kind: str, name: str) -> Entry:
        """The registered ``kind`` (e.g. "tasks") called ``name``, recorded as used (see :meth:`use`),
        or a UserError that lists the known names and suggests the closest."""
        entries = getattr(self, kind)()
        if name in entries:
            return self.use(kind, name)  # recorded for the result's plugin provenance
        close = difflib.get_close_matches(name, entries, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(entries)) or "none"
        raise UserError(f"unknown {kind[:-1]} {name!r}{hint} (known: {known}; see 'crsbench list {kind}')")

    def provenance(self, plugin_name: str) -> dict[str, Any]:
        info = self.plugins.get(plugin_name)
        if info is None:
            return {"entry_point": plugin_name, "module": None, "distribution": None, "version": None}
        return info.provenance()

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

    def rubrics(self) -> dict[str, Entry]:
        return self.collected()["rubrics"]

    def judge_benchmarks(self) -> dict[str, Entry]:
        return self.collected()["judge_benchmarks"]

    def _collect_report_sections(self) -> dict[str, Entry]:
        """Sections are called, never looked up by name, so no name is refused: each is keyed
        ``plugin:name`` and kept in precedence order, then the plugin's registration order."""
        impls = {impl.plugin_name: impl for impl in self.pm.hook.register_report_sections.get_hookimpls()}
        store: dict[str, Entry] = {}
        for plugin_name in [n for n in self.plugins if n in impls]:
            def register(section, _plugin=plugin_name):
                if not callable(section):
                    self._record_error(_plugin, f"register_report_sections: {section!r} is not callable; "
                                                "not registered")
                    return
                name = getattr(section, "name", None) or getattr(section, "__name__", None) or repr(section)
                store.setdefault(f"{_plugin}:{name}", Entry(name, section, _plugin))

            self._call_isolated(impls[plugin_name], "register_report_sections", register)
        return store

    def report_sections(self) -> list[Entry]:
        """The registered report sections, in the order ``crsbench report`` calls them."""
        return list(self.collected()["report_sections"].values())

    def metrics_objects(self) -> dict:
        """Metric name -> metric instance."""
        return {name: entry.obj for name, entry in self.metrics().items()}

    def add_commands(self, cli) -> None:
        """Let plugins add CLI commands, in precedence order; a plugin cannot replace a
        command that exists already (built-in or from an earlier plugin)."""
        impls = {impl.plugin_name: impl for impl in self.pm.hook.register_commands.get_hookimpls()}
        for plugin_name in [n for n in self.plugins if n in impls]:
            before = dict(cli.commands)
            try:
                impls[plugin_name].function(cli)
            except Exception as exc:
                self._record_error(plugin_name, f"register_commands: {type(exc).__name__}: {exc}")
            for name, command in before.items():
                if cli.commands.get(name) is not command:
                    cli.commands[name] = command
                    self.plugins[plugin_name].refused.append(f"command {name!r}: already exists")


_registry: PluginRegistry | None = None


def get_registry() -> PluginRegistry:
    """The process-wide registry, loading entry points on first use."""
    global _registry
    if _registry is None:
        _registry = PluginRegistry()
        _registry.load_entry_points()
    return _registry


def lookup(kind: str, name: str) -> Entry:
    """A registered model/task/metric/reward/judge by name from the process-wide registry,
    or a UserError that lists the known ones (:meth:`PluginRegistry.get`)."""
    return get_registry().get(kind, name)


def reset_registry() -> None:
    """Forget loaded plugins (tests)."""
    global _registry
    _registry = None
