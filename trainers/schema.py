"""The experiment config as pydantic v2 models: every key's default, type, bounds, choices and
description in one place (exported as JSON schema to ``docs/config-schema.json``).

Sections: ``name``/``preset`` (top level), ``[data]`` :class:`DataConfig`, ``[model]``
:class:`ModelConfig`, ``[train]`` :class:`TrainConfig`, ``[optimizers.<name>]`` (one table per
optimiser, validated per kind by :mod:`trainers.optimizer_options`). Models are frozen and strict:
an int is accepted where a float is expected, nothing else is converted; unknown keys are
refused. :class:`ExperimentConfig` lives in :mod:`trainers.config` (it needs the optimiser kinds).

Names that become file names (``name``, optimiser names) match :data:`NAME_PATTERN` /
:data:`OPTIMIZER_NAME_PATTERN`: letters, digits, ``_`` and ``-`` (plus ``.`` inside an experiment
name), at most 64 characters, so no name can leave the experiment folder.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dynamics.errors import ConfigError
from trainers.data import DATASETS, IMAGE_SHAPES

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
OPTIMIZER_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"
SEED_MAX = 2**63 - 1   # torch.Generator.manual_seed takes [-2**63, 2**64); +2 offsets must stay in range
DEPTH_MAX = 1000       # blocks; deeper nets are refused (time and memory grow linearly, no use case)


def check_name(key: str, name: object, pattern: str = OPTIMIZER_NAME_PATTERN) -> str:
    """``name`` if it is a safe file-name component; else ConfigError naming ``key``."""
    if not isinstance(name, str):
        raise ConfigError(f"config key {key} must be a str, got {name!r} ({type(name).__name__})")
    if not re.fullmatch(pattern, name):
        dots = " and '.'" if pattern == NAME_PATTERN else ""
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise ConfigError(f"config key {key} = {shown!r} is not a valid name: use 1-64 letters, digits, '_', "
                          f"'-'{dots}, not starting with '-' or '.'")
    return name


class Section(BaseModel):
    """Base of the config sections: frozen, strict, unknown keys forbidden."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataConfig(Section):
    """``[data]``: which data set, where it lives and how it is split."""

    name: Literal[DATASETS] = Field("mnist1d", description="data set")
    data_dir: str = Field("", description="directory (or .npz file) of local data; '' = the data set's "
                                          "default location / bundled copy")
    n_train: int = Field(0, ge=0, description="training examples used (0 = all)")
    n_test: int = Field(0, ge=0, description="test examples used (0 = all)")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="fraction held out as the test set when "
                                                                   "the data set has no test split")
    split_seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the train/test split, the probe set "
                                                               "and the held-out 'other' batch")
    probe_size: int = Field(256, ge=2, description="examples in the probe set (NTK, representations)")
    augment: Literal["none", "random_resized_crop"] = Field(
        "none", description="augmentation of every training mini-batch (image data sets only: "
                            f"{', '.join(IMAGE_SHAPES)}): 'random_resized_crop' crops a random box of every "
                            "image (area fraction in crop_scale, aspect ratio w/h in crop_ratio) and resizes it "
                            "bilinearly back to the image size, seeded by (train seed, step) "
                            "(trainers.data.augment); probe, held-out batch and evaluation are never augmented")
    crop_scale: list[float] = Field([0.08, 1.0], min_length=2, max_length=2,
                                    description="random_resized_crop: [min, max] fraction of the image area "
                                                "kept, 0 < min <= max <= 1 (the paper: [0.08, 1])")
    crop_ratio: list[float] = Field([3 / 4, 4 / 3], min_length=2, max_length=2,
                                    description="random_resized_crop: [min, max] aspect ratio (width / height) "
                                                "of the box, 0 < min <= max (torchvision's default [3/4, 4/3])")

    @model_validator(mode="after")
    def _augmentation(self) -> DataConfig:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ConfigError(f"config key data.crop_scale = {self.crop_scale!r} must be [min, max] with "
                              f"0 < min <= max <= 1 (fractions of the image area)")
        low, high = self.crop_ratio
        if not 0 < low <= high < float("inf"):
            raise ConfigError(f"config key data.crop_ratio = {self.crop_ratio!r} must be [min, max] with "
                              f"0 < min <= max (aspect ratios width / height)")
        if self.augment != "none" and self.name not in IMAGE_SHAPES:
            raise ConfigError(f"config key data.augment = {self.augment!r} needs an image data set "
                              f"({', '.join(IMAGE_SHAPES)}); data.name is {self.name!r}")
        return self


class ModelConfig(Section):
    """``[model]``: the network."""

    kind: Literal["revmlp", "mlp"] = Field("revmlp", description="reversible MLP (exact GN) or plain MLP")
    hidden: int = Field(1024, ge=1, description="hidden width of every block")
    depth: int = Field(2, ge=1, le=DEPTH_MAX, description="number of blocks")
    first_linear: bool = Field(True, description="RevMLP: a trained linear layer before the blocks")
    activation: Literal["relu", "tanh", "gelu", "identity"] = Field("relu", description="activation")
    dtype: Literal["float32", "float64"] = Field("float64", description="parameter and data dtype")
    init_std: float = Field(0.0, ge=0.0, description="RevMLP: trained weights drawn from N(0, init_std²) with zero "
                                                     "biases (the paper: 1e-3); 0 = torch's default "
                                                     "U(±1/√fan_in) for weights and biases")
    projection: Literal["input", "hidden"] = Field("input", description="RevMLP: scale of the fixed projections C: "
                                                   "'input' N(0, 1/(dim/2)), 'hidden' N(0, 1/hidden) (the "
                                                   "authors' released code)")


class PhaseConfig(Section):
    """One ``[[train.phases]]`` table: an optimiser for a number of epochs (:mod:`trainers.phases`)."""

    optimizer: str = Field(description="name of an [optimizers.<name>] table or a kind (gn, sgd, adam, ...)")
    epochs: int | None = Field(None, ge=1, description="epochs of this phase; the last phase may leave it out "
                                                       "(it runs to the end of training)")


class TrainConfig(Section):
    """``[train]``: what ``dynamics run`` trains and for how long."""

    optimizers: list[str] = Field(["gn", "sgd", "adam"], min_length=1,
                                  description="optimisers `dynamics run` trains (names of [optimizers.<name>] "
                                              "tables or kinds: gn, kgn, sgd, adam, a torch.optim class)")
    epochs: int = Field(30, ge=1, description="epochs (used when steps = 0)")
    steps: int = Field(0, ge=0, description="optimiser steps (0 = epochs x batches per epoch)")
    batch_size: int = Field(100, ge=1, description="mini-batch size (also the size of the other batch)")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the model initialisation and data order")
    seeds: list[Annotated[int, Field(ge=0, le=SEED_MAX)]] = Field(
        [], description="seeds `dynamics run` trains every optimiser with (empty = [train.seed]); --seeds "
                        "overrides")
    phases: list[PhaseConfig] = Field(
        [], description="optimiser phases of one extra run of `dynamics run` (named like 'adam-then-gn'): "
                        "[[train.phases]] tables with optimizer and epochs, switched at epoch boundaries "
                        "(empty = no phased run)")
    checkpoints: int = Field(12, ge=2, description="log-spaced checkpoints, step 0 and the last included")
    loss: Literal["ce", "mse"] = Field("ce", description="cross-entropy or squared error (no 1/2)")
    eval_size: int = Field(0, ge=0, description="examples of train and test evaluated at checkpoints (0 = all)")
    ntk: bool = Field(True, description="record the probe-set NTK at checkpoints")
    linearized: bool = Field(False, description="train the linearised twin f(x; θ₀) + J(x; θ₀)(θ − θ₀) beside the "
                                                "model (same batches, same optimiser) and store its distance, loss "
                                                "and accuracy at checkpoints (trainers.lazy; see "
                                                "docs/guide/lazy-regime.md for its cost)")
    sharpness: bool = Field(False, description="store the top eigenvalues of the probe-set loss Hessian and GGN "
                                               "(and Adam's preconditioned one) at checkpoints, by Lanczos "
                                               "(trainers.lazy; needs curvlinops; see docs/guide/lazy-regime.md)")
    params: Literal["all", "first_last", "none"] = Field(
        "all", description="checkpoints that store the trained parameters: 'all', 'first_last' (the first and "
                           "the latest; weight changes only from init to the last) or 'none' (no weight "
                           "changes in the analysis); see docs/guide/read-store.md, 'Store size'")
    threads: int = Field(1, ge=1, le=1024,
                         description="CPU threads of each training process (torch intra-op, OpenMP, MKL); part "
                                     "of the run's configuration because the thread count can change float "
                                     "rounding. `dynamics run` trains cores // threads runs at once in "
                                     "separate processes; --threads overrides")
    device: str = Field("cpu", pattern=r"^(cpu|auto|cuda(:[0-9]+)?)$",
                        description="torch device of the model, batches, probe, GN solves and NTK: 'cpu', "
                                    "'cuda', 'cuda:N' or 'auto' (CUDA when available); stores are written "
                                    "from CPU copies")
