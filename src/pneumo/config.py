"""Configuration: dataclasses with defaults, YAML files holding values only, ``--set key=value`` overrides.

Nothing is read at import time. ``apply_values(apply_file(cls(), file), parse_overrides(overrides))`` gives the final config, which runs
save next to their outputs (``dataclasses.asdict``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pneumo.errors import ConfigError

T = TypeVar("T")


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """``["lr=0.001", "model.depth=34"]`` -> ``{"lr": "0.001", "model.depth": "34"}``."""
    result: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        result[key.strip()] = value.strip()
    return result


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], key)
    if not isinstance(value, str):
        if annotation is float and isinstance(value, int):
            return float(value)
        if origin in (tuple, list) and isinstance(value, (list, tuple)):
            inner = args[0] if args else str
            return (tuple if origin is tuple else list)(_coerce(v, inner, key) for v in value)
        return value
    try:
        if annotation is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation in (int, float, str):
            return annotation(value)
        if origin in (tuple, list):
            inner = args[0] if args else str
            items = [v for v in value.strip("[]()").split(",") if v.strip()]
            return (tuple if origin is tuple else list)(_coerce(v.strip(), inner, key) for v in items)
    except ValueError as error:
        raise ConfigError(f"config key {key!r}: cannot read {value!r} as {annotation}") from error
    return value


def apply_values(config: T, values: dict[str, Any]) -> T:
    """Return a copy of dataclass ``config`` with ``values`` (dotted keys for nested dataclasses) applied."""
    hints = typing.get_type_hints(type(config))
    names = {f.name for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if head not in names:
            raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(sorted(names))}")
        if rest or isinstance(value, dict):
            nested.setdefault(head, {}).update({rest: value} if rest else value)
        else:
            changes[head] = _coerce(value, hints[head], key)
    for head, sub in nested.items():
        changes[head] = apply_values(getattr(config, head), sub)
    return dataclasses.replace(config, **changes)


def apply_file(config: T, file: str | Path | None) -> T:
    """Return ``config`` with the values of YAML ``file`` (a mapping, nested for nested dataclasses) applied."""
    if file is None:
        return config
    try:
        loaded = yaml.safe_load(Path(file).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config file {file}: {error}") from error
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {file} must hold a mapping of key: value")
    return apply_values(config, loaded)
