"""Model configs: a profile's dict plus ``--set key=value`` overrides, checked against a schema.

``--set`` values are read as YAML (``yaml.safe_load``): ``3`` is an integer, ``1e-4`` and
``0.5`` are floats, ``true``/``false`` booleans, ``null`` None, ``[1, 2]`` a list, anything
else a string. Each value is then checked in one place (:func:`check_value`) against what
the key accepts: the type of the profile's own value (an integer key takes integers, a float
key takes any finite number and receives a float, a string key receives the text as
written; null where any of the model's profiles has null there), narrowed by the model's
``config_schema`` (:class:`Param`: a type, bounds, choices, whether null is allowed), so a
model always receives typed, in-range values.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any, Iterable

from crsbench.errors import UserError


@dataclass(frozen=True)
class Param:
    """What one config key accepts. ``Model.config_schema`` maps dotted keys, or fnmatch
    patterns of them (``"*.batch_size"``; the first match wins, exact keys before patterns),
    to a Param. ``type`` None: the type of the profile's value for that key. Bounds: ``ge``
    (>=), ``gt`` (>), ``le`` (<=); ``choices``: the allowed values; ``nullable``: null allowed."""

    type: type | tuple[type, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple | None = None
    nullable: bool = False


_KINDS = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string",
          list: "a list", tuple: "a list", dict: "a mapping"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return f"{_KINDS.get(type(value), type(value).__name__)} ({value!r})"


def parse_value(text: str) -> Any:
    """'3' -> 3, '1e-4' -> 0.0001, 'true' -> True, '[1, 2]' -> [1, 2]; anything else stays a string."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads '1e-4' as a string
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value  # 'nan', 'inf' stay text
    return value


def find_param(schema: dict[str, Param] | None, key: str) -> Param | None:
    schema = schema or {}
    if key in schema:
        return schema[key]
    return next((p for pattern, p in schema.items() if fnmatchcase(key, pattern)), None)


def check_value(key: str, value: Any, default: Any, param: Param | None = None, raw: str | None = None,
                schema: dict[str, Param] | None = None) -> Any:
    """``value`` for config key ``key`` (whose profile value is ``default``), typed and checked,
    or a UserError that names the key, what it accepts and what it got. A section (a mapping
    in the profile) takes a mapping, whose keys the section has are checked in turn against
    ``schema``; other keys are the new section's own."""
    def fail(what: str):
        shown = f"={raw}" if raw is not None else ""
        raise UserError(f"--set {key}{shown}: {what} (--set values are read as YAML; see docs/plugin-api.md, "
                        "'Model configs and --set')")

    expected = param.type if param and param.type else None
    if isinstance(default, dict) and not (value is None and param and param.nullable):
        if not isinstance(value, dict):
            fail(f"{key} is a section of the config; set its keys ({key}.<key>=..., known: "
                 f"{', '.join(sorted(default)) or 'none'}) or give a whole mapping ({key}={{key: value, ...}})")
        return {k: check_value(f"{key}.{k}", v, default[k], find_param(schema, f"{key}.{k}"), schema=schema)
                if k in default else v for k, v in value.items()}
    if expected is None and default is not None:
        expected = type(default)
    if value is None:
        if (param and param.nullable) or (default is None and not (param and param.type)):
            return None
        fail("null is not allowed here")
    types = expected if isinstance(expected, tuple) else (expected,) if expected else ()
    if types:
        value = _coerce(value, types, raw, fail)
    if isinstance(value, float) and not math.isfinite(value):
        fail(f"expected a finite number, got {value!r}")
    if param:
        if param.choices is not None and value not in param.choices:
            fail(f"expected one of {', '.join(map(repr, param.choices))}, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            for bound, ok, word in ((param.ge, lambda b: value >= b, ">="), (param.gt, lambda b: value > b, ">"),
                                    (param.le, lambda b: value <= b, "<=")):
                if bound is not None and not ok(bound):
                    fail(f"expected a value {word} {bound}, got {value!r}")
    return value


def _coerce(value, types, raw, fail):
    if bool in types and isinstance(value, bool):
        return value
    if int in types and isinstance(value, int) and not isinstance(value, bool):
        return value
    if int in types and float not in types and isinstance(value, float) and value.is_integer():
        return int(value)  # 1e3 -> 1000
    if float in types and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if str in types:
        if isinstance(value, str):
            return value
        if raw is not None and not isinstance(value, (list, dict)):
            return raw.strip()  # a string key takes the text as written ('1.0', 'yes')
    for t in (list, tuple, dict):
        if t in types and isinstance(value, t):
            return value
    if tuple in types and isinstance(value, list):  # a profile's tuple is written as a YAML list
        return tuple(value)
    fail(f"expected {' or '.join(_KINDS.get(t, t.__name__) for t in types)}, got {_kind(value)}")


def null_keys(profiles: Iterable[dict], prefix: str = "") -> set[str]:
    """Dotted keys that are null in at least one of a model's profiles: the model takes null
    there (``lm.pretrain`` of the paper profile), so ``--set KEY=null`` is allowed in all."""
    out = set()
    for config in profiles:
        for name, value in config.items():
            if value is None:
                out.add(f"{prefix}{name}")
            elif isinstance(value, dict):
                out |= null_keys([value], f"{prefix}{name}.")
    return out


def apply_overrides(config: dict, overrides: Iterable[str], schema: dict[str, Param] | None = None,
                    profiles: Iterable[dict] = ()) -> dict:
    """Return a copy of ``config`` with dotted ``key=value`` overrides applied, each value
    typed and checked by :func:`check_value` against the profile and ``schema``; ``profiles``
    (the model's profiles) tell where null is a value the model takes (:func:`null_keys`).

    Keys must already exist, so a typo fails loudly instead of being ignored.
    """
    nullable = null_keys(profiles)
    out = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise UserError(f"--set {key}: no config section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            known = ", ".join(sorted(node)) or "none"
            raise UserError(f"--set {key}: unknown config key {parts[-1]!r} (known: {known})")
        param = find_param(schema, key)
        if key in nullable:
            param = replace(param or Param(), nullable=True)
        node[parts[-1]] = check_value(key, parse_value(raw), node[parts[-1]], param, raw, schema)
    return out


def schema_violations(config: dict, schema: dict[str, Param] | None, prefix: str = "") -> list[str]:
    """Every value of ``config`` that its own schema refuses (a test of a model's profiles)."""
    out = []
    for name, value in config.items():
        key = f"{prefix}{name}"
        param = find_param(schema, key)
        try:
            check_value(key, value, value, param, schema=schema)
        except UserError as exc:
            out.append(str(exc))
    return out
