"""A sweep file → the runs to train: grid product, one run per optimiser and point, duplicates merged.

A sweep file is an ordinary config file (``preset = "..."`` and tables overriding it) plus a table
``[sweep]`` whose keys are dotted config keys and whose values are lists::

    preset = "digits"
    [train]
    optimizers = ["gn", "adam"]
    [sweep]
    "optimizers.gn.lr" = [0.03, 0.1, 0.3]
    "train.seed" = [0, 1, 2]

The grid is the product of the lists (row-major in the file's key order). At every point each
optimiser of ``train.optimizers`` is one run, whose *run config* keeps only what that run trains with:
``optimizers`` holds its own table and ``train.optimizers`` only its name. Points whose run configs
are equal (Adam at every GN learning rate above) share one run, trained once.

Run names are deterministic and safe as file names: the optimiser, then ``key-value`` for each swept
key that can change the run (keys of other optimisers' tables are left out), with the shortest
dotted suffix that tells apart the keys affecting that optimiser, e.g. ``gn_lr-0.1_seed-0`` and ``adam_seed-0``; characters
other than letters, digits, ``_``, ``.``, ``+`` and ``-`` become ``~``; a name that would collide or exceed
:data:`MAX_NAME` characters ends in (or is replaced by) a digest of the run config.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dynamics.errors import ConfigError
from trainers.config import load_config, read_config_file, read_toml, validate

SWEEP_TABLE = "sweep"
MAX_NAME = 120
FORBIDDEN_KEYS = ("preset", "name", "train.optimizers")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]")


def digest(value: object) -> str:
    """SHA-256 (hex) of ``value``'s canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, allow_nan=False).encode()).hexdigest()


def flatten(table: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested tables → {dotted key: value} (lists and scalars are values)."""
    out: dict[str, object] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def resolve(preset: str, overrides: Mapping[str, object]) -> dict:
    """The validated config of preset ``preset`` with the dotted ``overrides`` applied, as its JSON-able
    dict (:meth:`trainers.config.ExperimentConfig.to_dict`; what crosses to the dask workers)."""
    return load_config(preset, overrides=overrides).to_dict()


def run_config(config: dict, optimizer: str) -> dict:
    """``config`` reduced to what a run of ``optimizer`` trains with (see the module docstring), with the
    optimiser's options complete (defaults filled in), so equal runs have equal run configs."""
    typed = validate(config)
    out = typed.to_dict()
    out["optimizers"] = {optimizer: typed.optimizer(optimizer).model_dump(mode="json")}
    out["train"]["optimizers"] = [optimizer]
    return validate(out).to_dict()


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its name, optimiser, run config and the config's digest."""

    name: str
    optimizer: str
    config: dict
    digest: str


@dataclass
class SweepPlan:
    """Everything ``dynamics sweep`` needs to know before training (see the module docstring)."""

    base: dict                                   # resolved config without [sweep]
    grid: dict[str, list]                        # dotted key → values, in file order
    optimizers: list[str]
    points: list[dict] = field(default_factory=list)   # {"values": {...}, "runs": {optimizer: name}}
    runs: dict[str, RunSpec] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return digest({"config": self.base, "sweep": self.grid})


def check_grid(table: object) -> dict[str, list]:
    """The ``[sweep]`` table as {dotted key: list of distinct scalars}; ConfigError naming a bad key."""
    if not isinstance(table, Mapping) or not table:
        raise ConfigError("config key sweep must be a non-empty table of dotted keys → lists of values, e.g. "
                          "\"optimizers.gn.lr\" = [0.03, 0.1]")
    grid = flatten(table)
    for key, values in grid.items():
        if key in FORBIDDEN_KEYS:
            raise ConfigError(f"config key sweep.{key} cannot be swept (each optimiser of train.optimizers is "
                              f"already one run per grid point)" if key == "train.optimizers"
                              else f"config key sweep.{key} cannot be swept")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"config key sweep.{key} must be a non-empty list of values, got {values!r}")
        for value in values:
            if isinstance(value, (dict, list)) or (isinstance(value, float) and not math.isfinite(value)):
                raise ConfigError(f"config key sweep.{key} holds {value!r}; values must be finite numbers, "
                                  f"strings or booleans")
        if any(_same(a, b) for i, a in enumerate(values) for b in values[i + 1:]):
            raise ConfigError(f"config key sweep.{key} lists a value twice: {values!r}")
    return grid


def _same(a: object, b: object) -> bool:
    """Equal as config values (1 == 1.0, but True is not 1)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def read_sweep_file(path: str | Path) -> tuple[str, dict[str, object], dict[str, list]]:
    """(preset, the file's own overrides as dotted keys, the grid) of sweep file ``path``."""
    path = Path(path)
    user = read_toml(read_config_file(path, "sweep file"), f"sweep file '{path}'")
    if SWEEP_TABLE not in user:
        raise ConfigError(f"sweep file '{path}' has no [sweep] table of dotted keys → lists of values")
    grid = check_grid(user.pop(SWEEP_TABLE))
    preset = user.pop("preset", "mnist1d")
    if not isinstance(preset, str):
        raise ConfigError(f"config key preset must be a preset name, got {preset!r}")
    return preset, flatten(user), grid


def plan_sweep(path: str | Path, overrides: Mapping[str, object] | None = None) -> SweepPlan:
    """The plan of sweep file ``path``: every point validated, runs deduplicated and named. ``overrides``
    (dotted keys, ``--set``) apply after the file's own keys; a key that is also swept → ConfigError."""
    preset, file_overrides, grid = read_sweep_file(path)
    swept = sorted(str(key) for key in (overrides or {}) if key in grid)
    if swept:
        raise ConfigError(f"--set {swept[0]} is also a key of the [sweep] table of '{path}'; drop one of them")
    overrides = {**file_overrides, **(overrides or {})}
    base = resolve(preset, overrides)
    optimizers = list(base["train"]["optimizers"])
    plan = SweepPlan(base=base, grid=grid, optimizers=optimizers)
    keys = list(grid)
    short = {optimizer: short_keys([k for k in keys if affects(k, optimizer)]) for optimizer in optimizers}
    by_digest: dict[str, str] = {}
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        config = resolve(preset, {**overrides, **values})
        names = {}
        for optimizer in optimizers:
            spec_config = run_config(config, optimizer)
            key = digest(spec_config)
            if key not in by_digest:
                name = unique_name(run_name(optimizer, values, short[optimizer]), key, plan.runs)
                plan.runs[name] = RunSpec(name, optimizer, spec_config, key)
                by_digest[key] = name
            names[optimizer] = by_digest[key]
        plan.points.append({"values": values, "runs": names})
    return plan


def affects(key: str, optimizer: str) -> bool:
    """Whether swept ``key`` can change a run of ``optimizer`` (another optimiser's table cannot)."""
    parts = key.split(".")
    return not (parts[0] == "optimizers" and len(parts) > 1 and parts[1] != optimizer)


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key's shortest dotted suffix that no other key ends with."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in keys):
                break
        out[key] = suffix
    return out


def safe(text: str) -> str:
    return _UNSAFE.sub("~", text)


def format_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def run_name(optimizer: str, values: dict[str, object], short: dict[str, str]) -> str:
    """``<optimizer>_<key>-<value>_...`` over the swept keys that affect the run."""
    parts = [safe(optimizer)] + [f"{safe(short[k])}-{safe(format_value(v))}" for k, v in values.items()
                                 if affects(k, optimizer)]
    return "_".join(parts)


def unique_name(name: str, key: str, taken: Mapping[str, object]) -> str:
    """``name``, or ``name`` + digest when taken or too long (never starting with "." or "-")."""
    if name.startswith((".", "-")):
        name = "~" + name[1:]
    if len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME - 13]}-{key[:12]}"
    if name in taken:
        name = f"{name}-{key[:12]}"
    return name
