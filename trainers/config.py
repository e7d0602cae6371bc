"""Experiment configs: shipped TOML presets, a user's TOML overriding one, dotted overrides, validation.

The config is an :class:`ExperimentConfig` (pydantic v2, frozen): ``config.model.hidden``,
``config.train.seed``, ``config.optimizers["gn"].lr``. Every key, its default, type, bounds, choices
and description is declared once in :mod:`trainers.schema` (sections) and
:mod:`trainers.optimizer_options` (optimiser tables); ``docs/config-schema.json`` is their JSON schema
(:func:`json_schema`). Unknown keys, wrong types and impossible values raise
:class:`dynamics.errors.ConfigError` naming the dotted key.

A user file may name its base with a top-level ``preset = "digits"``; its tables are merged key by
key over the preset; dotted ``overrides`` ({"optimizers.gn.lr": 0.3, "train.seed": 1}) apply last.
``ExperimentConfig.to_dict()`` is the plain JSON-able dict stored in run stores (root attr
``config``); :func:`trainers.config_toml.config_to_toml` writes a config as TOML.
"""

from __future__ import annotations

import copy
import errno
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from dynamics.errors import ConfigError
from trainers.config_errors import config_error
from trainers.optimizer_options import OptimizerOptions, check_model_kind, options_model, resolve_kind, validate_options
from trainers.schema import NAME_PATTERN, DataConfig, ModelConfig, TrainConfig, check_name

DEFAULT_PRESET = "mnist1d"


class ExperimentConfig(BaseModel):
    """A validated experiment: ``name``, ``preset``, ``data``, ``model``, ``train``, ``optimizers``.

    ``optimizers`` maps a table name to its options (one model per kind); every name in
    ``train.optimizers`` has a table (a missing one gets the defaults of the kind of that name).
    Optimisers that ``dynamics run`` trains (``train.optimizers``) are checked against the model
    (``gn`` needs a RevMLP); other tables are validated on their own."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    name: str = Field(DEFAULT_PRESET, pattern=NAME_PATTERN, description="experiment name; `dynamics run` writes "
                      "to runs/<name> (1-64 letters, digits, '_', '-', '.')")
    preset: str | None = Field(None, description="the preset this config is based on")
    data: DataConfig = Field(default_factory=DataConfig, description="[data] table")
    model: ModelConfig = Field(default_factory=ModelConfig, description="[model] table")
    train: TrainConfig = Field(default_factory=TrainConfig, description="[train] table")
    optimizers: dict[str, SerializeAsAny[OptimizerOptions]] = Field(
        default_factory=dict, description="[optimizers.<name>] tables: kind and keyword arguments per optimiser")

    @field_validator("name", mode="before")
    @classmethod
    def _safe_name(cls, name: Any) -> Any:
        return check_name("name", name, NAME_PATTERN) if isinstance(name, str) else name

    @model_validator(mode="before")
    @classmethod
    def _optimizer_tables(cls, data: Any) -> Any:
        """Validate every optimiser table by its kind; add default tables for listed names without one."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        tables = data.get("optimizers", {})
        if not isinstance(tables, Mapping):
            raise ConfigError(f"config key optimizers must be a table of tables, got {tables!r}")
        out = {}
        for name, table in tables.items():
            check_name(f"optimizers.{name}" if isinstance(name, str) and len(name) < 80 else "optimizers", name)
            out[name] = validate_options(f"optimizers.{name}", name, table)
        train = data.get("train", {})
        default = TrainConfig.model_fields["optimizers"].default
        names = train.get("optimizers", default) if isinstance(train, Mapping) else None
        if isinstance(names, list):
            for name in names:
                check_name("train.optimizers", name)
            names = [table_name(out, name) for name in names]
            data["train"] = {**train, "optimizers": names}
            for name in names:
                if name not in out:
                    out[name] = validate_options(f"train.optimizers ({name})", name, {})
        data["optimizers"] = out
        return data

    @model_validator(mode="after")
    def _runnable(self) -> ExperimentConfig:
        names = self.train.optimizers
        if len(set(names)) != len(names):
            raise ConfigError(f"config key train.optimizers lists a name twice: {names!r}")
        for name in names:
            check_model_kind(f"optimizers.{name}", self.optimizers[name], self.model.kind)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain JSON-able dict (tuples become lists), the shape stored in run stores."""
        return self.model_dump(mode="json")

    def with_overrides(self, overrides: Mapping[str, object]) -> ExperimentConfig:
        """A new validated config with dotted ``overrides`` applied (see :func:`apply_overrides`)."""
        return validate(apply_overrides(self.to_dict(), overrides))

    def optimizer(self, name: str) -> OptimizerOptions:
        """The options of optimiser ``name``: its table (matched case-insensitively), or the defaults of
        the kind ``name`` (checked against the model); ConfigError if neither exists."""
        check_name("optimizer", name)
        name = table_name(self.optimizers, name)
        if name in self.optimizers:
            options = self.optimizers[name]
        else:
            options = options_model(resolve_kind(f"optimizer {name}", name))()
        check_model_kind(f"optimizers.{name}", options, self.model.kind)
        return options


def table_name(tables: Mapping[str, object], name: str) -> str:
    """``name``, or the one table name equal to it ignoring case ("ADAM" → "adam")."""
    if name in tables:
        return name
    matches = [key for key in tables if isinstance(key, str) and key.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else name


def preset_names() -> list[str]:
    """Names of the presets shipped in ``trainers/presets``."""
    folder = resources.files("trainers") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def read_toml(data: bytes, source: str) -> dict:
    """The TOML document ``data`` (UTF-8 bytes) as a dict; ConfigError naming ``source`` otherwise."""
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"{source} is not UTF-8 text (byte {error.start}: {data[error.start:error.start + 1]!r}); "
                          f"save it as UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source} is not valid TOML: {error}") from None


MAX_CONFIG_BYTES = 1 << 20


def read_config_file(path: Path, what: str = "config file") -> bytes:
    """The bytes of the config file ``path`` (``what``: "config file", "sweep file"): a regular file, or anything else that reads like one (a
    pipe such as ``--config <(...)``, ``/dev/null`` = an empty config). ConfigError saying what is
    wrong otherwise: missing, a directory, unreadable (reason and errno), or over 1 MiB (``/dev/zero``)."""
    if path.is_dir():
        raise ConfigError(f"{what} '{path}' is a directory; give the path of a TOML file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what} '{path}' does not exist") from None
    except OSError as error:
        code = errno.errorcode.get(error.errno, error.errno) if error.errno else type(error).__name__
        raise ConfigError(f"{what} '{path}' cannot be read: {error.strerror or error} ({code})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} '{path}' is larger than {MAX_CONFIG_BYTES} bytes; a config is a short "
                          f"TOML file")
    return data


def read_preset(name: str) -> dict:
    """The preset ``name`` as a dict (unvalidated)."""
    if not isinstance(name, str) or name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; choose one of {preset_names()}")
    data = (resources.files("trainers") / "presets" / f"{name}.toml").read_bytes()
    return read_toml(data, f"preset {name!r}")


def merge(base: dict, override: Mapping) -> dict:
    """``base`` with ``override`` merged in, table by table (override's scalars and lists win)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(raw: dict, overrides: Mapping[str, object] | None) -> dict:
    """``raw`` with each dotted key of ``overrides`` set ("optimizers.gn.lr" → raw["optimizers"]["gn"]["lr"]);
    a key that crosses a non-table → ConfigError naming it. Values are validated later with the rest."""
    out = copy.deepcopy(raw)
    for key, value in (overrides or {}).items():
        parts = key.split(".") if isinstance(key, str) else []
        if not parts or not all(parts):
            raise ConfigError(f"override key {key!r} must be a dotted config key like 'optimizers.gn.lr'")
        if parts[0] == "preset":
            raise ConfigError("override key preset cannot be set; choose the preset with preset= / --preset")
        table = out
        for depth, part in enumerate(parts[:-1]):
            if part not in table:
                table[part] = {}
            if not isinstance(table[part], dict):
                raise ConfigError(f"override key {key}: config key {'.'.join(parts[:depth + 1])} is not a table")
            table = table[part]
        table[parts[-1]] = copy.deepcopy(value)
    return out


def validate(config: Mapping | ExperimentConfig) -> ExperimentConfig:
    """The validated config; ConfigError naming the first bad key."""
    if isinstance(config, ExperimentConfig):
        return config
    if not isinstance(config, Mapping):
        raise ConfigError(f"a config must be a table, got {config!r} ({type(config).__name__})")
    try:
        return ExperimentConfig.model_validate(dict(config))
    except ValidationError as error:
        raise config_error(error, ExperimentConfig) from None


def load_config(preset: str | None = None, path: str | Path | None = None,
                overrides: Mapping[str, object] | None = None) -> ExperimentConfig:
    """The validated config: preset ``preset`` (or the file's ``preset`` key, else "mnist1d") overridden
    by the user's TOML file at ``path``, then by the dotted ``overrides``. ``config.preset`` names the preset."""
    user: dict = {}
    if path is not None:
        path = Path(path)
        user = read_toml(read_config_file(path), f"config file '{path}'")
    chosen = user.pop("preset", None)
    if chosen is not None and preset is not None and chosen != preset:
        raise ConfigError(f"config key preset = {chosen!r} in '{path}' contradicts the requested preset {preset!r}")
    name = preset or chosen or DEFAULT_PRESET
    base = read_preset(name)
    base.setdefault("name", name)
    raw = apply_overrides(merge(base, user), overrides)
    raw["preset"] = name
    return validate(raw)


def json_schema() -> dict:
    """JSON schema of the config: ``ExperimentConfig`` plus the model of each built-in optimiser kind."""
    from trainers.optimizer_options import KIND_MODELS

    schema = ExperimentConfig.model_json_schema()
    schema["optimizer_kinds"] = {kind: model.model_json_schema() for kind, model in KIND_MODELS.items()}
    return schema
