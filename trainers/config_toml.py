"""A config as TOML text (what ``dynamics config show`` prints); reading it back gives the same config.

Scalars and arrays of the config are written as TOML values (strings with JSON-compatible escapes,
floats with ``repr``, ``inf``/``nan`` as TOML spells them); tables as ``[section]`` and
``[optimizers.<name>]``; keys whose value is None (TOML has no null) are written as comments and
read back as their default, which is None.
"""

from __future__ import annotations

import json
import math
from typing import Any

from trainers.config import ExperimentConfig


def toml_value(value: Any) -> str:
    """One TOML value for a JSON-able scalar or list."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as a TOML value")


def toml_key(key: str) -> str:
    """A bare key when it is one, else a quoted key."""
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else json.dumps(key)


def table_lines(values: dict) -> list[str]:
    return [f"# {toml_key(k)} = (none)" if v is None else f"{toml_key(k)} = {toml_value(v)}"
            for k, v in values.items()]


def config_to_toml(config: ExperimentConfig) -> str:
    """The resolved ``config`` as a TOML document (top-level keys, then one table per section)."""
    data = config.to_dict()
    lines = table_lines({k: v for k, v in data.items() if not isinstance(v, dict)})
    for section in ("data", "model", "train"):
        lines += ["", f"[{section}]", *table_lines(data[section])]
    for name, options in data["optimizers"].items():
        lines += ["", f"[optimizers.{toml_key(name)}]", *table_lines(options)]
    return "\n".join(lines) + "\n"
