"""Everything a training run needs before its first step, built from a validated config.

- the standardised data set as tensors of the model's dtype;
- the training *pool* and the fixed *other* batch: a permutation of the training set seeded by
  ``data.split_seed`` holds out its first ``batch_size`` examples as the other batch (never trained
  on, so its loss change measures how an update transfers to unseen examples of the training
  distribution — the paper evaluates "another mini-batch"); the rest is the pool the mini-batches are
  drawn from (each epoch a fresh permutation, the last incomplete batch dropped);
- the probe set: the next ``probe_size`` examples of that permutation (pool examples, so trained on);
- the evaluation subsets: the full train (pool + other batch) and test sets, or the first
  ``eval_size`` examples of a seeded permutation of each;
- the augmentation of training mini-batches (``data.augment``, :mod:`trainers.data.augment`) or None;
- the model (seeded by the run's seed) and the checkpoint steps: step 0 (initialisation), log-spaced
  steps up to the last step (``schedules.log_spaced_steps(T + 1, checkpoints)``) and the step nearest
  10 % of the run (:func:`checkpoint_schedule`).
Probe, other batch and evaluation subsets depend on ``split_seed`` only, so runs with different
optimisers and seeds share them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from dynamics.errors import ConfigError, DynamicsError
from dynamics.models import MLP, RevMLP
from dynamics.schedules import log_spaced_steps
from trainers.data import Dataset, load_dataset
from trainers.data.augment import RandomResizedCrop
from trainers.schema import DataConfig, ModelConfig

if TYPE_CHECKING:
    from trainers.config import ExperimentConfig

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Experiment:
    """Tensors and sizes of one run (see the module docstring)."""

    x: torch.Tensor            # (N_train, D) training features
    y: torch.Tensor            # (N_train,) labels
    pool: torch.Tensor         # (N_pool,) indices of the training examples mini-batches come from
    other: torch.Tensor        # (batch_size,) indices of the fixed other batch
    probe: torch.Tensor        # (probe_size,) indices of the probe set
    eval_train: tuple[torch.Tensor, torch.Tensor]
    eval_test: tuple[torch.Tensor, torch.Tensor]
    n_classes: int
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    checkpoint_steps: list[int]
    augment: RandomResizedCrop | None = None   # applied to training mini-batches only (trainers.loop)

    def to(self, device: torch.device | str) -> Experiment:
        """A copy whose features, labels and evaluation sets live on ``device``. The index tensors
        (pool, other, probe) stay on the CPU, where the seeded data order is drawn, so every device
        trains on the same batches."""
        move = lambda pair: (pair[0].to(device), pair[1].to(device))  # noqa: E731
        augment = None if self.augment is None else self.augment.to(device)
        return replace(self, x=self.x.to(device), y=self.y.to(device), eval_train=move(self.eval_train),
                       eval_test=move(self.eval_test), augment=augment)


def build_model(model_config: ModelConfig, dim: int, n_classes: int, seed: int) -> nn.Module:
    """RevMLP or MLP as ``[model]`` describes, for ``dim`` inputs and ``n_classes`` outputs."""
    kind, dtype = model_config.kind, DTYPES[model_config.dtype]
    if kind == "revmlp":
        if dim % 2 or n_classes > dim:
            raise ConfigError(f"config key model.kind = 'revmlp' needs an even number of input features "
                              f">= the number of classes; the data have {dim} features and {n_classes} classes")
        return RevMLP(dim, model_config.hidden, model_config.depth, n_classes,
                      first_linear=model_config.first_linear, activation=model_config.activation,
                      seed=seed, dtype=dtype, init_std=model_config.init_std or None,
                      projection=model_config.projection)
    return MLP(dim, model_config.hidden, model_config.depth, n_classes,
               activation=model_config.activation, seed=seed, dtype=dtype)


def eval_subset(x: torch.Tensor, y: torch.Tensor, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All of (x, y), or ``size`` examples of a seeded permutation when 0 < size < N."""
    if size <= 0 or size >= len(y):
        return x, y
    pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    return x[pick], y[pick]


def checkpoint_schedule(total: int, checkpoints: int) -> list[int]:
    """Step 0, log-spaced steps up to ``total`` (``checkpoints`` of them, at most total + 1), and the step
    nearest 10 % of the run (where the paper's "good early progress" is judged; one more checkpoint when
    the log-spaced grid misses it)."""
    steps = set(log_spaced_steps(total + 1, min(checkpoints, total + 1)))
    steps.add(max(1, round(total / 10)) if total >= 1 else 0)
    return sorted(steps)


def load_data(data_config: DataConfig) -> Dataset:
    """The standardised data set ``[data]`` describes (:func:`trainers.data.load_dataset`); a bad
    size or fraction → ConfigError naming the section. Load it once and pass it to :func:`prepare`
    (and :func:`trainers.loop.train`) of every run of the same ``[data]``: generating MNIST-1D takes
    seconds."""
    try:
        return load_dataset(data_config.name, data_config.data_dir, n_train=data_config.n_train,
                            n_test=data_config.n_test, test_fraction=data_config.test_fraction,
                            split_seed=data_config.split_seed)
    except DynamicsError:
        raise
    except ValueError as error:
        raise ConfigError(f"config section data: {error}") from error


def prepare(config: ExperimentConfig, data: Dataset | None = None) -> Experiment:
    """Data, index sets and schedule for ``config`` (validated); impossible sizes → ConfigError.

    ``data``: the data set of ``config.data`` already loaded by :func:`load_data` (shared between
    runs); None loads it. The caller vouches that it was loaded from the same ``[data]`` section."""
    data_config, train_config = config.data, config.train
    if data is None:
        data = load_data(data_config)
    elif not isinstance(data, Dataset) or data.name != data_config.name:
        raise ValueError(f"prepare: data must be the Dataset of data.name = {data_config.name!r} (from "
                         f"load_data), got {getattr(data, 'name', type(data).__name__)!r}")
    dtype = DTYPES[config.model.dtype]
    # copies in torch's own (64-byte aligned) memory: MKL's kernels may round differently for
    # differently aligned inputs, and a NumPy array's alignment depends on how it was made (generated
    # here, or received from another process), so a view of it would make results depend on that
    x, y = torch.tensor(data.x_train, dtype=dtype), torch.tensor(data.y_train)
    x_test, y_test = torch.tensor(data.x_test, dtype=dtype), torch.tensor(data.y_test)
    batch, probe_size, n = train_config.batch_size, data_config.probe_size, len(y)
    if 2 * batch > n:
        raise ConfigError(f"config key train.batch_size = {batch} is too large for {n} training examples "
                          f"(the other batch and at least one mini-batch need {2 * batch})")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(data_config.split_seed))
    other, pool = order[:batch], order[batch:].sort().values
    if probe_size > len(pool):
        raise ConfigError(f"config key data.probe_size = {probe_size} exceeds the {len(pool)} training "
                          f"examples available for probing")
    probe = order[batch: batch + probe_size]
    steps_per_epoch = len(pool) // batch
    total = train_config.steps or train_config.epochs * steps_per_epoch
    split_seed = data_config.split_seed
    augment = None
    if data_config.augment == "random_resized_crop":
        augment = RandomResizedCrop(data.image_shape, torch.from_numpy(data.mean).to(dtype),
                                    torch.from_numpy(data.scale).to(dtype), area=tuple(data_config.crop_scale),
                                    ratio=tuple(data_config.crop_ratio))
    return Experiment(
        x=x, y=y, pool=pool, other=other, probe=probe,
        eval_train=eval_subset(x, y, train_config.eval_size, split_seed + 1),
        eval_test=eval_subset(x_test, y_test, train_config.eval_size, split_seed + 2),
        n_classes=data.n_classes, batch_size=batch, steps_per_epoch=steps_per_epoch, total_steps=total,
        checkpoint_steps=checkpoint_schedule(total, train_config.checkpoints), augment=augment,
    )

