"""Experiment configs: shipped TOML presets, a user's TOML overriding one, and validation.

A config is a dict with sections (see :data:`SCHEMA` for every key, its type and allowed values):

``name``      experiment name (default: the preset's name; ``dynamics run`` writes to runs/<name>)
``[data]``    name, data_dir, n_train, n_test (0 = all), test_fraction, split_seed, probe_size
``[model]``   kind ("revmlp" | "mlp"), hidden, depth, first_linear, activation, dtype
``[train]``   optimizers (which ones ``dynamics run`` trains), epochs, steps (0 → epochs), batch_size,
              seed, checkpoints (number of log-spaced checkpoints), loss ("ce" | "mse"), eval_size,
              ntk (record the probe-set NTK at checkpoints)
``[optimizers.<name>]``  keyword arguments of optimiser <name>; ``kind`` picks the optimiser when the
              table's name is not itself one (gn, kgn, sgd, adam or a torch.optim class name).

A user file may name its base with a top-level ``preset = "digits"``; its tables are merged key by
key over the preset. Unknown keys, wrong types and impossible values raise
:class:`dynamics.errors.ConfigError` naming the dotted key.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from dynamics.errors import ConfigError
from trainers.data import DATASETS


@dataclass(frozen=True)
class Field:
    """One config value: its type, allowed choices and bounds (``low`` inclusive unless ``open_low``)."""

    kind: type
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False


SCHEMA: dict[str, Any] = {
    "name": Field(str),
    "data": {
        "name": Field(str, choices=DATASETS),
        "data_dir": Field(str),
        "n_train": Field(int, low=0),
        "n_test": Field(int, low=0),
        "test_fraction": Field(float, low=0.0, high=1.0, open_low=True, open_high=True),
        "split_seed": Field(int, low=0),
        "probe_size": Field(int, low=2),
    },
    "model": {
        "kind": Field(str, choices=("revmlp", "mlp")),
        "hidden": Field(int, low=1),
        "depth": Field(int, low=1),
        "first_linear": Field(bool),
        "activation": Field(str, choices=("relu", "tanh", "gelu", "identity")),
        "dtype": Field(str, choices=("float32", "float64")),
    },
    "train": {
        "optimizers": Field(list),
        "epochs": Field(int, low=1),
        "steps": Field(int, low=0),
        "batch_size": Field(int, low=1),
        "seed": Field(int, low=0),
        "checkpoints": Field(int, low=2),
        "loss": Field(str, choices=("ce", "mse")),
        "eval_size": Field(int, low=0),
        "ntk": Field(bool),
    },
}


def preset_names() -> list[str]:
    """Names of the presets shipped in ``trainers/presets``."""
    folder = resources.files("trainers") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def read_toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source} is not valid TOML: {error}") from error


def read_preset(name: str) -> dict:
    """The preset ``name`` as a dict (unvalidated)."""
    if not isinstance(name, str) or name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; choose one of {preset_names()}")
    text = (resources.files("trainers") / "presets" / f"{name}.toml").read_text(encoding="utf-8")
    return read_toml(text, f"preset {name!r}")


def merge(base: dict, override: dict) -> dict:
    """``base`` with ``override`` merged in, table by table (override's scalars and lists win)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_field(key: str, field: Field, value: object) -> object:
    """``value`` converted to ``field.kind`` (int → float allowed) or a ConfigError naming ``key``."""
    if field.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if field.kind is int and isinstance(value, bool) or not isinstance(value, field.kind):
        raise ConfigError(f"config key {key} must be of type {field.kind.__name__}, got {describe(value)}")
    if field.choices and value not in field.choices:
        raise ConfigError(f"config key {key} = {value!r} is not allowed; choose one of {list(field.choices)}")
    if field.low is not None and (value <= field.low if field.open_low else value < field.low):
        raise ConfigError(f"config key {key} = {value!r} must be {'>' if field.open_low else '>='} {field.low}")
    if field.high is not None and (value >= field.high if field.open_high else value > field.high):
        raise ConfigError(f"config key {key} = {value!r} must be {'<' if field.open_high else '<='} {field.high}")
    return value


def check_section(prefix: str, schema: dict, table: object) -> dict:
    """Every key of ``table`` checked against ``schema``; unknown or missing keys raise."""
    if not isinstance(table, dict):
        raise ConfigError(f"config key {prefix} must be a table, got {describe(table)}")
    out = {}
    for key, value in table.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in schema:
            raise ConfigError(f"unknown config key {dotted}; allowed keys here: {sorted(schema)}")
        spec = schema[key]
        out[key] = check_section(dotted, spec, value) if isinstance(spec, dict) else check_field(dotted, spec, value)
    missing = sorted(set(schema) - set(table))
    if missing:
        raise ConfigError(f"config section {prefix or '(top level)'} lacks key(s) {missing}")
    return out


def validate(config: dict) -> dict:
    """The validated config (a new dict); ConfigError naming the first bad key."""
    from trainers.optimizers import check_optimizer

    if not isinstance(config, dict):
        raise ConfigError(f"a config must be a table, got {describe(config)}")
    body = {k: v for k, v in config.items() if k not in ("optimizers", "preset")}
    out = check_section("", SCHEMA, body)
    if "preset" in config:
        out["preset"] = check_field("preset", Field(str), config["preset"])
    tables = config.get("optimizers", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"config key optimizers must be a table of tables, got {describe(tables)}")
    names = out["train"]["optimizers"]
    if not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"config key train.optimizers must be a non-empty list of names, got {names!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"config key train.optimizers lists a name twice: {names!r}")
    out["optimizers"] = {name: check_optimizer(f"optimizers.{name}", name, table, out["model"]["kind"])
                         for name, table in tables.items()}
    for name in names:
        if name not in out["optimizers"]:
            out["optimizers"][name] = check_optimizer(f"train.optimizers ({name})", name, {}, out["model"]["kind"])
    return out


def load_config(preset: str | None = None, path: str | Path | None = None) -> dict:
    """The validated config: preset ``preset`` (or the file's ``preset`` key, else "mnist1d") overridden
    by the user's TOML file at ``path``. The result names its preset under ``preset``."""
    user: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist")
        user = read_toml(path.read_text(encoding="utf-8"), f"config file '{path}'")
    chosen = user.pop("preset", None)
    if chosen is not None and preset is not None and chosen != preset:
        raise ConfigError(f"config key preset = {chosen!r} in '{path}' contradicts the requested preset {preset!r}")
    name = preset or chosen or "mnist1d"
    base = read_preset(name)
    if "name" not in base:
        base["name"] = name
    config = validate(merge(base, user))
    config["preset"] = name
    return config


def resolve_optimizer(config: dict, name: str) -> dict:
    """The options table of optimiser ``name`` (with its ``kind``); ConfigError if the config lacks it."""
    if name in config["optimizers"]:
        return dict(config["optimizers"][name])
    from trainers.optimizers import check_optimizer
    return check_optimizer(f"optimizer {name}", name, {}, config["model"]["kind"])
