"""Optimisers behind one small contract: ``step(x, y) -> StepResult`` performs one update.

Kinds (the ``kind`` of an ``[optimizers.<name>]`` table, default: the table's name):
- ``gn``: exact Gauss–Newton for reversible networks, :class:`dynamics.gauss_newton.ReversibleGN`;
- ``kgn``: Moore–Penrose Gauss–Newton for any model, :class:`dynamics.gauss_newton.KernelGN`;
- ``sgd``, ``adam``: ``torch.optim.SGD`` / ``torch.optim.Adam``;
- any other ``torch.optim`` class by its name (``AdamW``, ``RMSprop``, ...).
The table's other keys are the keyword arguments of that class; they are checked against its
signature (unknown names and wrong types → ConfigError). The loss is ``train.loss`` for all kinds.

Losses (per sample, averaged over the batch): "ce" = −log softmax(f)_y; "mse" = ‖f − onehot(y)‖²
(DESIGN §3, no ½).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynamics.errors import ConfigError

GN_KINDS = {"gn": "ReversibleGN", "kgn": "KernelGN"}
TORCH_KINDS = {"sgd": "SGD", "adam": "Adam"}
RESERVED = {"self", "params", "model", "loss"}


def batch_loss(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean loss over the batch: logits (N, O), integer labels y (N,) → scalar."""
    if loss == "ce":
        return F.cross_entropy(logits, y)
    if loss == "mse":
        target = F.one_hot(y, logits.shape[-1]).to(logits.dtype)
        return (logits - target).pow(2).sum(dim=-1).mean()
    raise ValueError(f"unknown loss {loss!r}; choose 'ce' or 'mse'")


def optimizer_class(key: str, kind: object) -> type:
    """The class that implements optimiser ``kind``; ConfigError naming ``key`` if there is none."""
    if not isinstance(kind, str):
        raise ConfigError(f"config key {key}.kind must be a str, got {kind!r}")
    if kind in GN_KINDS:
        from dynamics import gauss_newton
        return getattr(gauss_newton, GN_KINDS[kind])
    cls = getattr(torch.optim, TORCH_KINDS.get(kind, kind), None)
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"config key {key}: unknown optimizer {kind!r}; choose gn, kgn, sgd, adam or a "
                          f"torch.optim class name")
    return cls


def accepts(default: object, value: object) -> bool:
    """Whether ``value`` (from TOML) fits a parameter whose default is ``default``."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float, torch.Tensor)):
        return number
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, tuple):
        return isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return isinstance(value, (bool, int, float, str, list))


def check_optimizer(key: str, name: str, table: object, model_kind: str) -> dict:
    """The options of optimiser ``name`` (with ``kind`` filled in), checked against its class signature."""
    if not isinstance(table, dict):
        raise ConfigError(f"config key {key} must be a table, got {table!r}")
    options = dict(table)
    kind = options.pop("kind", name)
    cls = optimizer_class(key, kind)
    if kind == "gn" and model_kind != "revmlp":
        raise ConfigError(f"config key {key}: optimizer 'gn' needs model.kind = 'revmlp' "
                          f"(got {model_kind!r}); use 'kgn' for other models")
    parameters = {p.name: p for p in inspect.signature(cls.__init__).parameters.values()
                  if p.name not in RESERVED and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    for option, value in options.items():
        if option not in parameters:
            raise ConfigError(f"unknown config key {key}.{option}; {cls.__name__} accepts {sorted(parameters)}")
        default = parameters[option].default
        if default is not inspect.Parameter.empty and not accepts(default, value):
            raise ConfigError(f"config key {key}.{option} must be like the default {default!r}, got {value!r} "
                              f"({type(value).__name__})")
    missing = [p for p, spec in parameters.items() if spec.default is inspect.Parameter.empty and p not in options]
    if missing:
        raise ConfigError(f"config table {key} lacks required key(s) {missing} of {cls.__name__}")
    lr = options.get("lr", parameters.get("lr").default if "lr" in parameters else None)
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and not lr > 0:
        raise ConfigError(f"config key {key}.lr must be > 0, got {lr!r}")
    return {"kind": kind, **options}


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


def make_optimizer(name: str, options: dict, model: nn.Module, loss: str) -> FirstOrder | GaussNewton:
    """Build optimiser ``name`` as ``options`` (a checked table with ``kind``) describes, for ``model``;
    values its class rejects → ConfigError naming the table."""
    options = dict(options)
    kind = options.pop("kind")
    cls = optimizer_class(f"optimizers.{name}", kind)
    try:
        if kind in GN_KINDS:
            solver = cls(model, loss=loss, **options)
            return GaussNewton(model, solver, loss, solver.param_groups[0]["lr"])
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        return FirstOrder(model, cls(model.parameters(), **kwargs), loss)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config table optimizers.{name} ({cls.__name__}): {error}") from error
