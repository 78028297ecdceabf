"""Typed configs from TOML/JSON tables, with errors that name the file, the table and the key.

Every config in frontload is a ``@dataclass(kw_only=True)`` that checks itself in
``__post_init__`` by raising :class:`ConfigError` with the field name; :func:`from_mapping` builds
one from a plain mapping (a TOML table), rejects unknown keys, coerces and checks types, and
prefixes every error with where the table came from (``study.toml: [model].hidden``).

Names (arms, corpora, tasks, shard sets, the study) become folder names, table keys and words in
generated job scripts, so they follow one pattern, :data:`NAME_PATTERN`; a field typed :data:`Name`
(or a ``dict[Name, ...]`` key) is checked by :func:`check_name` during coercion. Numbers must be
finite: ``nan`` and ``inf`` are refused wherever a number is expected.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, NewType, TypeVar, Union

from frontload.core.errors import FrontloadError

T = TypeVar("T")


class ConfigError(FrontloadError):
    """A config value is wrong; ``key`` names the field (dotted for nested tables)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


# A letter or digit, then letters, digits and ``_ . @ = -`` (room for sweep names like
# ``front_loaded@share=0.10``). No ``/``, no leading dot (so no ``..``), no space, quote or newline:
# a name is safe as one path component and as one shell word.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@=-]*"
NAME_MAX_LENGTH = 100
_NAME = re.compile(NAME_PATTERN)
Name = NewType("Name", str)  # a str that must match NAME_PATTERN


def check_name(value: Any, key: str) -> str:
    """``value`` if it is a legal name; otherwise a :class:`ConfigError` naming ``key`` and the pattern."""
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a name (string), got {value!r}")
    if not _NAME.fullmatch(value) or len(value) > NAME_MAX_LENGTH:
        raise ConfigError(
            key,
            f"{value!r} is not a valid name: use letters, digits and _ . @ = - (starting with a letter or digit, "
            f"at most {NAME_MAX_LENGTH} characters)",
        )
    return value


def _type_name(tp: Any) -> str:
    if tp is Name:
        return "name"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_finite(value: Any, key: str) -> Any:
    # nan/inf pass every comparison test silently (nan > 0 is False, so is nan <= 0) and surface far
    # from the file as a crash or a garbage plan; refuse them wherever a number may sit.
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value!r}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_finite(v, f"{key}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}[{i}]")
    return value


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value!r}")
    if tp is Any:
        return _check_finite(value, key)
    if tp is Name:
        return check_name(value, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        if len(candidates) == 1:
            # ``X | None``: X's own error names the nested key at fault (``sft.blend.hq``), keep it.
            return _coerce(value, candidates[0], key)
        errors = []
        for arg in candidates:
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        deep = [e for e in errors if e.key != key]
        if len(deep) == 1:  # only one type got past the top level: its error is the useful one
            raise deep[0]
        raise ConfigError(key, f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {value!r}")
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if (origin or tp) is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a table, got {value!r}")
        kt, vt = args if len(args) == 2 else (Any, Any)
        if kt is Name:
            for k in value:
                check_name(k, f"{key}.{k}")
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a table, got {value!r}")
        return from_mapping(tp, value, where=key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)  # TOML writes 6e6 as a float
        if not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    return _check_finite(value, key)


def from_mapping(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from ``data``; every error names ``where`` and the key."""
    if not isinstance(data, Mapping):
        raise ConfigError(where, f"expected a table, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"unknown key (known keys: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}", "required key is missing")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if e.key.startswith(where):
            raise
        raise ConfigError(f"{where}.{e.key}", e.message) from None


def as_dict(obj: Any) -> Any:
    """A config as plain JSON-able data (written beside everything it made)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): as_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [as_dict(v) for v in obj]
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return obj
