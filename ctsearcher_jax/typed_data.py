"""Typed, frozen dataclasses from plain data (YAML, JSON, `--set` values): type checks that name
the key.

`build_dataclass(Config, data)` is how `config.py` turns a mapping into a config: each value is
checked against its field's annotation (int, float, bool, str, Literal, Optional/Union, tuples,
nested dataclasses), YAML lists become tuples, integers stay within +-2^53 (exact in JSON and
float64), and no float may be inf or NaN. Ranges belong to each dataclass's `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

from ctsearcher_jax.errors import ConfigError

MAX_INT = 2**53


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting YAML lists to tuples."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key '{key}': {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value in args and type(value) is type(args[args.index(value)]):
            return value
        raise ConfigError(f"config key '{key}': {value!r} is not one of {list(args)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{key}': expected null, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"config key '{key}': expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= MAX_INT:
                raise ConfigError(f"config key '{key}': {value} is out of range (|value| < 2^53)")
            return value
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int) and abs(value) >= MAX_INT:
                raise ConfigError(f"config key '{key}': {value} is out of range (|value| < 2^53)")
            return float(value)  # inf/nan: the field's range check, else `_check_finite`
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    raise ConfigError(f"config key '{key}': unsupported type {tp}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "/".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def build_dataclass(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """`cls(**data)` with every value checked against its field's annotation (nested dataclasses
    from nested mappings; lists become tuples) and every float finite; ConfigError naming the
    dotted key (`prefix` + field) of the first problem, or the unknown keys and the valid ones.
    Fields missing from `data` take their defaults; `cls.__post_init__` checks the ranges."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}': expected a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
            f"valid keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build_dataclass(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    built = cls(**kwargs)  # __post_init__: each field's range, named
    _check_finite(built, prefix)
    return built


def _check_finite(section: Any, prefix: str) -> None:
    """ConfigError naming the first number of a section that is inf or NaN (a field whose own
    range check did not already name it)."""
    for field in dataclasses.fields(section):
        value = getattr(section, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key '{prefix}{field.name}': {value} is not a finite number")
