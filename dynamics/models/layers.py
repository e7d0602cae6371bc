"""Building blocks shared by the models: named activations, seeded ``nn.Linear`` layers, eval mode.

Models draw their initial weights from a local ``torch.Generator`` so that a seed fixes a model
without touching torch's global random state.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """The activation module called ``name`` (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def check_positive_float(name: str, value: object) -> float:
    """``value`` as a float when it is a finite real number > 0; ValueError/TypeError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def seeded_linear(
    in_features: int,
    out_features: int,
    generator: torch.Generator,
    *,
    bias: bool = True,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    init_std: float | None = None,
) -> nn.Linear:
    """``nn.Linear`` with weights and bias drawn from U(-1/√in, 1/√in) using ``generator``.

    The same distribution as torch's default initialisation, but reproducible from a local seed.
    With ``init_std`` (a float > 0) the weights are drawn from N(0, init_std²) and the bias is zero,
    the published initialisation of Buffelli et al. (2024; std 1e-3 in their code and App. F).
    Raises ValueError for an ``init_std`` that is not a finite number > 0.
    """
    if init_std is not None:
        check_positive_float("init_std", init_std)
    # skip_init: no default (global-RNG) initialisation before the seeded one below
    layer = nn.utils.skip_init(nn.Linear, in_features, out_features, bias=bias, dtype=dtype,
                               device=torch.get_default_device() if device is None else device)
    bound = 1.0 / math.sqrt(in_features)
    with torch.no_grad():
        if init_std is not None:
            weight = torch.randn(out_features, in_features, generator=generator, dtype=torch.float64)
            layer.weight.copy_(weight * init_std)
            if bias:
                layer.bias.zero_()
            return layer
        weight = torch.rand(out_features, in_features, generator=generator, dtype=torch.float64)
        layer.weight.copy_((2 * weight - 1) * bound)
        if bias:
            b = torch.rand(out_features, generator=generator, dtype=torch.float64)
            layer.bias.copy_((2 * b - 1) * bound)
    return layer


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer ≥ ``minimum``; otherwise a ValueError/TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_input(x: torch.Tensor, dim: int, dtype: torch.dtype, model: str) -> None:
    """Raise if ``x`` is not a floating tensor of ``dtype`` whose last dimension is ``dim``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model} input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] != dim:
        raise ValueError(f"{model} expects inputs with {dim} features (last dimension), got shape {tuple(x.shape)}")
    if x.dtype != dtype:
        raise TypeError(f"{model} has dtype {dtype} but the input has dtype {x.dtype}; convert one of them")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the body with ``model`` in eval mode; every sub-module's train/eval flag is restored afterwards."""
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        yield model
    finally:
        for module, training in modes.items():
            module.training = training
