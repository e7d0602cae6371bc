"""pydantic ``ValidationError`` → one-line :class:`dynamics.errors.ConfigError` naming the dotted key.

Only the first error is reported (a user fixes one key at a time); the message names the key as it is
written in TOML (``model.hidden``, ``optimizers.adam.betas``), the bad value and what is allowed.
"""

from __future__ import annotations

import typing

from pydantic import BaseModel, ValidationError

from dynamics.errors import ConfigError

TYPE_NAMES = {"int_type": "int", "float_type": "float", "bool_type": "bool", "string_type": "str",
              "list_type": "list", "tuple_type": "list", "int_parsing": "int", "float_parsing": "float"}
TABLE_TYPES = {"model_type", "dict_type", "model_attributes_type"}
BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
          "less_than_equal": ("<=", "le")}


def describe(value: object) -> str:
    """``value`` and its Python type, e.g. ``2.5 (float)``."""
    return f"{value!r} ({type(value).__name__})"


def model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class found by walking ``loc`` (field names) from ``root``, or None."""
    current: object = root
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        current = current.model_fields[part].annotation
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def choices_at(root: type[BaseModel], loc: tuple) -> list | None:
    """The allowed values of the Literal field at ``loc``, or None."""
    parent = model_at(root, loc[:-1])
    if parent is None or loc[-1] not in parent.model_fields:
        return None
    annotation = parent.model_fields[loc[-1]].annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is typing.Literal:
            return list(typing.get_args(candidate))
    return None


def dotted(prefix: str, loc: tuple) -> str:
    """``prefix.a.b`` with list indices as ``[i]``."""
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text = f"{text}.{part}" if text else str(part)
    return text or "(top level)"


def message(error: dict, root: type[BaseModel], prefix: str) -> str:
    """One line for one pydantic error dict."""
    loc, kind, value, ctx = tuple(error["loc"]), error["type"], error.get("input"), error.get("ctx") or {}
    key = dotted(prefix, loc)
    if kind == "value_error" and isinstance(ctx.get("error"), ConfigError):
        return str(ctx["error"])
    if kind == "extra_forbidden":
        parent = model_at(root, loc[:-1])
        allowed = f"; allowed keys here: {sorted(parent.model_fields)}" if parent is not None else ""
        return f"unknown config key {key}{allowed}"
    if kind == "missing" and loc and isinstance(loc[-1], int):
        return f"config key {dotted(prefix, loc[:-1])} has too few items (item {loc[-1]} is missing)"
    if kind == "missing":
        return f"config section {dotted(prefix, loc[:-1])} lacks key(s) {[loc[-1]]}"
    if kind in TABLE_TYPES:
        return f"config key {key} must be a table, got {describe(value)}"
    if kind in TYPE_NAMES:
        return f"config key {key} must be of type {TYPE_NAMES[kind]}, got {describe(value)}"
    if kind == "literal_error":
        choices = choices_at(root, loc)
        return f"config key {key} = {value!r} is not allowed; choose one of {choices or ctx.get('expected')}"
    if kind in BOUNDS:
        symbol, name = BOUNDS[kind]
        return f"config key {key} = {value!r} must be {symbol} {ctx.get(name)}"
    if kind in ("too_short", "too_long"):
        return f"config key {key} = {value!r} has {ctx.get('actual_length')} item(s); {error['msg'].lower()}"
    return f"config key {key} = {value!r}: {error['msg']}"


def config_error(error: ValidationError, root: type[BaseModel], prefix: str = "") -> ConfigError:
    """The ConfigError describing the first error of ``error`` (raised validating ``root``)."""
    first = error.errors()[0]
    return ConfigError(message(first, root, prefix))
