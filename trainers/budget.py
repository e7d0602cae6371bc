"""Memory a training run needs at least, checked before any model is built or store written.

Counts (elements of the model's dtype, d = input features, h = ``model.hidden``, L = ``model.depth``,
O = classes, B = ``train.batch_size``):

- RevMLP: L blocks of two couplings, each a fixed projection (h × d/2) and a trained linear layer
  (d/2 × h + d/2), plus the readout (O × d): ``L·(2·h·d + d) + O·d``;
- MLP: ``d·h + h + (L − 1)·(h² + h) + h·O + O``;
- at least 4 copies of the model live at once during a step (parameters, gradients, and the two flat
  parameter vectors of the update norm), plus the B × h activations of every layer;
- ``kgn`` also forms the Jacobian of the B·O outputs: ``B·O·P`` elements for P trained parameters;
- ``train.linearized`` adds the twin (its parameters and gradients, the frozen model at θ₀, and for
  ``gn`` the solver's copy at θ₀: 3 more copies of the model) and, for ``kgn``, the twin's Jacobian.

This is a lower bound (optimiser state, NTK and checkpoint copies come on top), so a refused config
would certainly not fit; the limit is the memory the operating system reports as available.
"""

from __future__ import annotations

import os

from dynamics.errors import ConfigError

ITEMSIZE = {"float32": 4, "float64": 8}
MODEL_COPIES = 4
LINEARIZED_COPIES = 3
GIB = 2**30


def model_elements(kind: str, dim: int, hidden: int, depth: int, n_classes: int) -> tuple[int, int]:
    """(all elements of parameters and buffers, trained parameters) of the model ``[model]`` describes."""
    if kind == "revmlp":
        trained = depth * (hidden * dim + dim)
        return trained + depth * hidden * dim + n_classes * dim, trained
    total = dim * hidden + hidden + (depth - 1) * (hidden * hidden + hidden) + hidden * n_classes + n_classes
    return total, total


def needed_bytes(config, optimizer_kind: str, dim: int, n_classes: int) -> int:
    """A lower bound of the bytes one training step of ``config`` with ``optimizer_kind`` needs."""
    model = config.model
    total, trained = model_elements(model.kind, dim, model.hidden, model.depth, n_classes)
    elements = MODEL_COPIES * total + config.train.batch_size * model.hidden * model.depth
    if optimizer_kind == "kgn":
        elements += config.train.batch_size * n_classes * trained * (2 if config.train.linearized else 1)
    if config.train.linearized:
        elements += LINEARIZED_COPIES * total
    return elements * ITEMSIZE[model.dtype]


def available_bytes() -> int | None:
    """Memory available to new allocations (Linux MemAvailable, else free pages), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config, optimizer: str, optimizer_kind: str, dim: int, n_classes: int,
                 available: int | None = None) -> None:
    """ConfigError with the estimate when ``config`` cannot fit in ``available`` bytes (default: what the
    machine has available now)."""
    available = available_bytes() if available is None else available
    needed = needed_bytes(config, optimizer_kind, dim, n_classes)
    if available is not None and needed > available:
        model = config.model
        raise ConfigError(f"config needs at least {needed / GIB:.3g} GiB of memory to train {optimizer!r} "
                          f"(model.hidden = {model.hidden}, model.depth = {model.depth}, "
                          f"train.batch_size = {config.train.batch_size}, {model.dtype}) but "
                          f"{available / GIB:.3g} GiB are available; lower model.hidden or model.depth")
