"""A validated config section as a frozen dataclass (`typed`), the one way the stages read theirs.

Standard library only: the config check (`billetjax.config`) and the detector both use it, and the
detector must not import the config check.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin, get_type_hints


def typed(cls: type, values: Mapping[str, Any], path: str, **given: Any) -> Any:
    """The frozen dataclass `cls` from a validated config section `values` (at key `path`, for
    messages): every field is read from `values` by its name, unless given by keyword, and
    converted to its annotated type (lists to tuples, nested sections to their dataclasses,
    numbers to int or float). A missing key is refused with its path: the schema, which fills in
    every default, was not applied."""
    if not isinstance(values, Mapping):
        raise ValueError(f"config {path} is {values!r}, not a mapping: {VALIDATE_HINT}")
    hints = get_type_hints(cls)
    out = {}
    for field in dataclasses.fields(cls):
        if field.name in given:
            out[field.name] = given[field.name]
            continue
        if field.name not in values:
            raise ValueError(f"config {path} lacks {field.name}: {VALIDATE_HINT}")
        out[field.name] = _as_type(hints[field.name], values[field.name], f"{path}.{field.name}")
    return cls(**out)


# How to fix a section that lacks a key: it was not validated (the schema fills in every default).
VALIDATE_HINT = "validate the config against schemas/config.schema.yaml, which fills in the defaults"


def _as_type(kind: Any, value: Any, path: str) -> Any:
    """`value` converted to the type annotation `kind` (see `typed`)."""
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        options = get_args(kind)
        if value is None and type(None) in options:
            return None
        kind = next(k for k in options if k is not type(None))
        origin = get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return typed(kind, value, path)
    if origin is tuple:
        args = get_args(kind)
        each = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        items = list(value)
        if each is None and len(args) != len(items):
            raise ValueError(f"config {path} = {value!r}: expected {len(args)} values")
        return tuple(_as_type(each if each is not None else a, v, f"{path}[{i}]")
                     for i, (a, v) in enumerate(zip(args if each is None else [each] * len(items), items)))
    if kind is float:
        return float(value)
    if kind is int and not isinstance(value, bool):
        return int(value)
    if kind is bool:
        return bool(value)
    return value
