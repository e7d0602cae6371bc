"""Optimisers behind one small contract: ``step(x, y) -> StepResult`` performs one update.

Kinds and their options (validated by :mod:`trainers.optimizer_options`): ``gn`` (exact
Gauss–Newton for reversible networks, :class:`dynamics.gauss_newton.ReversibleGN`), ``kgn``
(Moore–Penrose Gauss–Newton for any model, :class:`dynamics.gauss_newton.KernelGN`), ``sgd``,
``adam`` and any other ``torch.optim`` class by name. The loss is ``train.loss`` for all kinds.

Losses (per sample, averaged over the batch): "ce" = −log softmax(f)_y; "mse" = ‖f − onehot(y)‖²
(DESIGN §3, no ½).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynamics.errors import ConfigError
from trainers.optimizer_options import GN_KINDS, OptimizerOptions, optimizer_class



def batch_loss(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean loss over the batch: logits (N, O), integer labels y (N,) → scalar."""
    if loss == "ce":
        return F.cross_entropy(logits, y)
    if loss == "mse":
        target = F.one_hot(y, logits.shape[-1]).to(logits.dtype)
        return (logits - target).pow(2).sum(dim=-1).mean()
    raise ValueError(f"unknown loss {loss!r}; choose 'ce' or 'mse'")


@dataclass(frozen=True)
class StepResult:
    """One update: ``loss`` on the batch before it, ‖∇L‖ before it, GN residual ρ (NaN for first-order),
    and ``seconds`` of wall time spent in the update itself."""

    loss: float
    grad_norm: float
    residual: float
    seconds: float


def gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> tuple[torch.Tensor, float]:
    """Batch loss (detached) and ‖∇_θ L‖ over the trained parameters; leaves the .grad fields set."""
    model.zero_grad(set_to_none=True)
    value = batch_loss(model(x), y, loss)
    value.backward()
    squares = [p.grad.double().pow(2).sum() for p in model.parameters() if p.grad is not None]
    return value.detach(), math.sqrt(float(torch.stack(squares).sum())) if squares else 0.0


class FirstOrder:
    """A ``torch.optim`` optimiser: forward, backward, ``optimizer.step()`` (all timed)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss: str) -> None:
        self.model, self.optimizer, self.loss = model, optimizer, loss

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        start = time.perf_counter()
        value, grad_norm = gradient(self.model, x, y, self.loss)
        self.optimizer.step()
        seconds = time.perf_counter() - start
        self.model.zero_grad(set_to_none=True)
        return StepResult(float(value), grad_norm, math.nan, seconds)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


class GaussNewton:
    """A Gauss–Newton solver (``ReversibleGN`` / ``KernelGN``); only ``solver.step(x, y)`` is timed,
    the gradient norm comes from a separate backward pass before it."""

    def __init__(self, model: nn.Module, solver: object, loss: str, lr: float) -> None:
        self.model, self.solver, self.loss, self._lr = model, solver, loss, lr

    @property
    def lr(self) -> float:
        return float(self._lr)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        _, grad_norm = gradient(self.model, x, y, self.loss)
        self.model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        report = self.solver.step(x, y)
        seconds = time.perf_counter() - start
        return StepResult(float(report.loss), grad_norm, float(report.residual), seconds)

    def state_dict(self) -> dict:
        return self.solver.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.solver.load_state_dict(state)


def make_optimizer(name: str, options: OptimizerOptions, model: nn.Module, loss: str) -> FirstOrder | GaussNewton:
    """Build optimiser ``name`` as ``options`` (validated, see :mod:`trainers.optimizer_options`) describes,
    for ``model``; values its class still rejects → ConfigError naming the table."""
    cls = optimizer_class(options.kind)
    kwargs = options.kwargs()
    try:
        if options.kind in GN_KINDS:
            solver = cls(model, loss=loss, **kwargs)
            return GaussNewton(model, solver, loss, solver.param_groups[0]["lr"])
        return FirstOrder(model, cls(model.parameters(), **kwargs), loss)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config table optimizers.{name} ({cls.__name__}): {error}") from error
