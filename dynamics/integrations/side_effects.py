"""Extra forward passes that leave training as it was: the callbacks' loss-before/after measurements.

A callback that measures a batch loss after an update runs the model once more. Three things would
otherwise change the training run itself: torch's random streams (dropout draws), the running
statistics of normalisation layers in training mode, and the parameters (when a loss is taken at
the parameters before the update). :func:`untouched` runs a block with torch's random state forked
(set to a captured state, replaying the draws of the step's own forward, or to a fixed seed) and the
normalisation statistics restored afterwards; :func:`parameters_set_to` swaps parameter values in
and back. Everything runs under ``torch.no_grad()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def devices_of(module: nn.Module) -> list[int]:
    """CUDA device indices holding ``module``'s parameters (whose random streams must be forked too)."""
    return sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})


def random_state(devices: list[int]) -> dict:
    """torch's random state now: the CPU generator and the generators of the CUDA ``devices``
    (:func:`devices_of` the model)."""
    return {"cpu": torch.get_rng_state(), "cuda": {i: torch.cuda.get_rng_state(i) for i in devices}}


def running_statistics(module: nn.Module) -> list[nn.Module]:
    """Normalisation layers whose training-mode forward updates running statistics."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
            and m.track_running_stats and m.training]


@contextlib.contextmanager
def untouched(module: nn.Module, devices: list[int], *, state: dict | None = None,
              seed: int | None = None) -> Iterator[None]:
    """Run the block under ``torch.no_grad()`` with torch's random streams (CPU and the CUDA
    ``devices``) forked and set to ``state`` (from :func:`random_state`) or seeded with ``seed``, and
    the running statistics of ``module``'s normalisation layers restored afterwards. After the block
    every random stream and buffer is as before it (torch.random.fork_rng)."""
    norms = running_statistics(module)
    saved = [{k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None} for m in norms]
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            if state is not None:
                torch.set_rng_state(state["cpu"])
                for index, value in state["cuda"].items():
                    torch.cuda.set_rng_state(value, index)
            elif seed is not None:
                torch.manual_seed(seed)
            yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)


def parameter_copy(module: nn.Module) -> list[torch.Tensor]:
    """A detached copy of ``module``'s trained parameters (those with requires_grad), in order."""
    return [p.detach().clone() for p in module.parameters() if p.requires_grad]


@contextlib.contextmanager
def parameters_set_to(module: nn.Module, values: list[torch.Tensor]) -> Iterator[None]:
    """Inside the block ``module``'s trained parameters hold ``values`` (:func:`parameter_copy` order);
    their own values are put back afterwards."""
    params = [p for p in module.parameters() if p.requires_grad]
    if len(params) != len(values) or any(p.shape != v.shape for p, v in zip(params, values)):
        raise ValueError("the saved parameters do not match the module's trained parameters (shapes or count differ)")
    current = parameter_copy(module)
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, v in zip(params, current):
                p.copy_(v)
