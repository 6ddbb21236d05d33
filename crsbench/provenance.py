"""Which plugins a run used, and which distribution (name, version) each came from.

A leaderboard row must say what to install to reproduce it, so a result file records,
for the model, the task and every metric, reward and judge plugin the run used, the
entry point and the distribution that provides it (``plugins`` in result.json).
"""
from __future__ import annotations

import os
from typing import Any, Iterable

from crsbench.errors import UserError
from crsbench.plugins import PLUGINS_ENV, PluginRegistry

BUILTIN_METRICS_PLUGIN = "builtin_metrics"
ROLES = ("model", "task", "metrics", "rewards", "judges", "rubrics")


def require_metrics(registry: PluginRegistry, generates: bool) -> None:
    """A run that would compute no metric is a user mistake: say which plugin is missing.

    Recommendation is evaluated for every model; generation only for models that generate.
    """
    from crsbench.metrics.base import GENERATION, RECOMMENDATION

    kinds = {getattr(entry.obj, "kind", None) for entry in registry.metrics().values()}
    if RECOMMENDATION in kinds or (generates and GENERATION in kinds):
        return
    loaded = ", ".join(registry.plugins) or "none"
    hint = ""
    if BUILTIN_METRICS_PLUGIN not in registry.plugins:
        hint = f"; the built-in metrics come from plugin {BUILTIN_METRICS_PLUGIN!r}, which is not loaded"
        if os.environ.get(PLUGINS_ENV) is not None:
            hint += f" ({PLUGINS_ENV}={os.environ[PLUGINS_ENV]!r} leaves it out)"
    elif registry.plugins[BUILTIN_METRICS_PLUGIN].error:
        hint = f"; plugin {BUILTIN_METRICS_PLUGIN!r} failed: {registry.plugins[BUILTIN_METRICS_PLUGIN].error}"
    wanted = "recommendation or generation" if generates else "recommendation"
    raise UserError(f"this run would compute no metric: no {wanted} metric is registered{hint} "
                    f"(loaded plugins: {loaded}; see 'crsbench plugins')")


def _metric_name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def plugins_used(registry: PluginRegistry, *, model: str | None, task: str | None, metric_keys: Iterable[str],
                 judges: Iterable[str] = ()) -> dict[str, Any]:
    """The ``plugins`` section of a result: one provenance record per plugin and role.

    Rewards and judges count as used when a model or the harness looked them up through
    ``PluginRegistry.use`` (or ``judges`` names them).
    """
    def one(kind: str, name: str) -> dict[str, Any]:
        entry = registry.collected()[kind][name]
        return registry.provenance(entry.plugin)

    def grouped(kind: str, names: Iterable[str]) -> list[dict[str, Any]]:
        by_plugin: dict[str, dict[str, Any]] = {}
        entries = registry.collected()[kind]
        for name in sorted(set(names)):
            if name not in entries:
                continue
            plugin = entries[name].plugin
            record = by_plugin.setdefault(plugin, {**registry.provenance(plugin), "names": []})
            record["names"].append(name)
        return [by_plugin[p] for p in sorted(by_plugin)]

    return {
        "model": {**one("models", model), "names": [model]} if model else None,
        "task": {**one("tasks", task), "names": [task]} if task else None,
        "metrics": grouped("metrics", (_metric_name(k) for k in metric_keys)),
        "rewards": grouped("rewards", registry.used.get("rewards", ())),
        "judges": grouped("judges", set(judges) | registry.used.get("judges", set())),
        "rubrics": grouped("rubrics", registry.used.get("rubrics", ())),
    }


def unversioned(plugins: dict[str, Any] | None) -> list[str]:
    """Roles/entry points in a ``plugins`` section that lack a distribution version."""
    if not plugins:
        return ["every plugin (the result file records no plugin provenance)"]
    missing = []
    for role, value in plugins.items():
        if role not in ROLES:  # e.g. "backfilled", a note on where the records came from
            continue
        for record in value if isinstance(value, list) else [value]:
            if not isinstance(record, dict) or not record.get("distribution") or not record.get("version"):
                name = record.get("entry_point") if isinstance(record, dict) else record
                missing.append(f"{role} plugin {name!r}")
    return missing


def require_versions(plugins: dict[str, Any] | None, source: Any) -> None:
    missing = unversioned(plugins)
    if missing:
        raise UserError(f"{source}: cannot publish a result whose plugins have no distribution version "
                        f"({'; '.join(missing)}); install the plugin as a package (pip install) and rerun")
