"""Model configs: a profile's dict plus ``--set key=value`` overrides."""
from __future__ import annotations

import copy
from typing import Any, Iterable

from crsbench.errors import UserError


def parse_value(text: str) -> Any:
    """'3' -> 3, '1e-4' -> 0.0001, 'true' -> True, '[1, 2]' -> [1, 2]; anything else stays a string."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads '1e-4' as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(config: dict, overrides: Iterable[str]) -> dict:
    """Return a copy of ``config`` with dotted ``key=value`` overrides applied.

    Keys must already exist, so a typo fails loudly instead of being ignored.
    """
    out = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise UserError(f"--set {key}: no config section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            known = ", ".join(sorted(node)) or "none"
            raise UserError(f"--set {key}: unknown config key {parts[-1]!r} (known: {known})")
        node[parts[-1]] = parse_value(raw)
    return out
