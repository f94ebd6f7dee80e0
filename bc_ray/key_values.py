"""`key=value,key=value` text and JSON records into typed dataclasses: a model family's spec
(`--spec`, the version record) or any other typed configuration named on a command line
(`--dataset synthetic:seed=1`). Plain Python, so light modules can read their options."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from bc_ray.exceptions import ConfigError

T = TypeVar("T")


def spec_from_fields(spec_type: type[T], data: dict[str, Any], family: str) -> T:
    """A dataclass spec from its record, refusing fields it does not have. A tuple field comes
    back from JSON as a list: made a tuple again, so the spec equals the one recorded."""
    known = {f.name for f in dataclasses.fields(spec_type)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{family} spec has unknown field(s) {sorted(unknown)}; it has "
                          f"{sorted(known)}")
    hints = _hints(spec_type, family)
    data = {name: tuple(value) if isinstance(value, list) and _origin(hints[name]) is tuple
            else value for name, value in data.items()}
    return _built(spec_type, data, family)


def parse_fields(spec_type: type[T], text: str, family: str,
                 aliases: Mapping[str, str] | None = None, base: T | None = None) -> T:
    """`key=value,key=value` into a dataclass spec, each value read by its field's type (bool,
    int, float, str or an optional one); a key given twice is refused, not the last one kept.
    Fields not named keep `base`'s values (else the dataclass's defaults)."""
    aliases = dict(aliases or {})
    hints = _hints(spec_type, family)
    fields = {f.name for f in dataclasses.fields(spec_type)}
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        name = aliases.get(key.strip(), key.strip())
        if not sep or name not in fields:
            raise ConfigError(f"cannot read {family} spec part {part!r}; expected key=value with "
                              f"keys {sorted(set(aliases) | fields)}")
        if name in values:
            raise ConfigError(f"{family} spec: {name} is given twice")
        values[name] = _typed(hints[name], raw.strip(), f"{family} spec: {name}")
    if base is not None:
        values = {**{f.name: getattr(base, f.name) for f in dataclasses.fields(spec_type)
                     if f.init}, **values}
    return _built(spec_type, values, family)


def _hints(spec_type: type, family: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(spec_type)
    except Exception as error:  # noqa: BLE001 - a hint imported only for type checkers
        raise ConfigError(f"{family} spec: its field types cannot be read at run time "
                          f"({type(error).__name__}: {error}); import what they name at run "
                          "time") from None


def _built(spec_type: type[T], values: dict[str, Any], family: str) -> T:
    """The spec, or its own refusal of the values (a `__post_init__` check) as one line."""
    infinite = [name for name, value in values.items()
                if isinstance(value, float) and not math.isfinite(value)]
    if infinite:  # the version record (JSON) would hold null
        raise ConfigError(f"{family} spec: {', '.join(infinite)} must be a finite number")
    try:
        return spec_type(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{family} spec {values}: {error}") from None


def _origin(hint: Any) -> Any:
    return typing.get_origin(hint) or hint


def _typed(hint: Any, raw: str, what: str) -> Any:
    """`raw` as the field's type: bool, int, float, str or one of a Literal's values, or None
    for an optional field; any other type is refused by name, never read as text."""
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) \
        else (hint,)
    if raw.lower() in ("none", "null") and type(None) in kinds:
        return None
    kind = next((k for k in kinds if k is not type(None)), str)
    if typing.get_origin(kind) is typing.Literal:
        choices = {str(choice): choice for choice in typing.get_args(kind)}
        if raw not in choices:
            raise ConfigError(f"{what} must be one of {sorted(choices)}, got {raw!r}")
        return choices[raw]
    if kind not in (bool, int, float, str):
        raise ConfigError(f"{what}: a field of type {kind} cannot be read from key=value text; "
                          "the family reads it in its own parse_spec")
    if kind is bool:
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{what} must be true or false, got {raw!r}")
        return raw.lower() in ("true", "1", "yes")
    if kind in (int, float):
        try:
            number = kind(raw)
        except ValueError:
            raise ConfigError(f"{what} must be a number ({kind.__name__}), got {raw!r}") from None
        if not math.isfinite(number):  # the version record (JSON) cannot hold it
            raise ConfigError(f"{what} must be a finite number, got {raw!r}")
        return number
    return raw
