"""The linearised twin of a network: its first-order Taylor model around the initial parameters.

f_lin(x; θ) = f(x; θ₀) + J(x; θ₀)(θ − θ₀),   J(x; θ₀) = ∂f(x; θ)/∂θ at θ₀

(Lee et al. 2019, "Wide neural networks of any depth evolve as linear models under gradient descent",
eq. 3; Chizat et al. 2019, "On lazy training"). A network trains in the *lazy* regime when, trained
side by side on the same batches with the same optimiser, f_t and f_lin,t stay close (Fort et al.
2020): :func:`relative_distance` measures ‖f_t(X) − f_lin,t(X)‖ / ‖f_t(X) − f₀(X)‖.

:func:`linearized` builds f_lin as an ``nn.Module`` whose trained parameters θ carry the model's own
names (``named_parameters()``, ``state_dict()`` keys) and start at θ₀, so any optimiser trains it as
it trains the model: ``torch.optim`` classes, :class:`~dynamics.gauss_newton.KernelGN` (the exact,
minimum-norm GN step of the linear model, whose Jacobian is J(x; θ₀) everywhere) and, through
:class:`TwinGN`, :class:`~dynamics.gauss_newton.ReversibleGN` (whose right inverse needs the
reversible network: it is applied at θ₀, the linear model's Jacobian). One forward is one
``torch.func.jvp`` of the model at θ₀ with tangent θ − θ₀; J is never formed. Gradients flow
through the tangent (reverse over forward mode), so a backward pass costs a few forwards.

The linearisation point is the model *in eval mode* (dropout off, normalisation layers on their
running statistics), as for the NTK and the GN steps of this package, whatever mode the linear
model is in; the model's non-trained parameters and buffers are kept at their values at
construction.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from dynamics.distributed import unwrap_model

#: Checkpoint scalars of a run trained with its linearised twin (trainers.lazy; dynamics.store.attributes).
LINEAR_SCALARS = ("linearized_distance_probe", "linearized_distance_test", "linearized_train_loss",
                  "linearized_train_acc", "linearized_test_loss", "linearized_test_acc")


class LinearizedModel(nn.Module):
    """f_lin(x; θ) = f(x; θ₀) + J(x; θ₀)(θ − θ₀); build it with :func:`linearized`.

    Attributes:
        base: a frozen copy of the model at θ₀ (eval mode; not a submodule, so its parameters are not
            the linear model's); moved by ``.to()`` / ``.double()`` with the linear model.
    The trained parameters θ are registered under the model's names (empty container modules mirror
    the model's module paths); ``initial_parameters()`` returns θ₀ by name.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"linearized needs a torch.nn.Module, got {type(model).__name__}")
        model = unwrap_model(model)
        trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not trained:
            raise ValueError(f"{type(model).__name__} has no trainable parameters to linearise in")
        for name, p in trained:
            if not p.is_floating_point():
                raise TypeError(f"parameter {name!r} has dtype {p.dtype}; only floating-point parameters can be "
                                f"linearised")
        base = copy.deepcopy(model).eval()
        base.requires_grad_(False)
        object.__setattr__(self, "base", base)   # not registered: its parameters are θ₀, not trained
        self._names = tuple(name for name, _ in trained)
        for name, p in trained:
            *path, leaf = name.split(".")
            owner: nn.Module = self
            for part in path:
                if part not in owner._modules:
                    owner.add_module(part, nn.Module())
                owner = owner._modules[part]
            owner.register_parameter(leaf, nn.Parameter(p.detach().clone()))

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of the trained parameters θ (the model's names, in its order)."""
        return self._names

    def initial_parameters(self) -> dict[str, torch.Tensor]:
        """θ₀ by name (the frozen copy's tensors; do not modify them)."""
        frozen = dict(self.base.named_parameters())
        return {name: frozen[name] for name in self._names}

    def _apply(self, fn: Callable, recurse: bool = True):  # .to(), .double(), .cuda() move θ₀ too
        super()._apply(fn, recurse)
        self.base._apply(fn, recurse)
        return self

    def forward(self, *args, **kwargs) -> torch.Tensor:
        params = dict(self.named_parameters())   # θ: the registered tensors, or those of a functional_call
        initial = self.initial_parameters()
        names = self._names
        base = self.base

        def outputs(*values: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(base, dict(zip(names, values)), args, kwargs, strict=False)

        tangents = tuple(params[n] - initial[n].to(params[n].dtype) for n in names)
        primal, change = torch.func.jvp(outputs, tuple(initial[n] for n in names), tangents)
        if not isinstance(primal, torch.Tensor):
            raise TypeError(f"linearized supports models that return one tensor; {type(base).__name__} returned "
                            f"{type(primal).__name__}")
        return primal + change

    def extra_repr(self) -> str:
        count = sum(p.numel() for p in self.parameters())
        return f"linearised {type(self.base).__name__} at θ₀ ({count} trained parameters)"


def linearized(model: nn.Module) -> LinearizedModel:
    """The linearised twin f_lin(x; θ) = f(x; θ₀) + J(x; θ₀)(θ − θ₀) of ``model`` at its parameters θ₀.

    Returns an ``nn.Module`` with the same trained-parameter names as ``model`` (its
    ``DistributedDataParallel``/``DataParallel`` wrapper removed), starting at θ₀ (so f_lin = f there),
    taking what the model's forward takes, trainable like the model. Forward passes are
    ``torch.func.jvp`` calls of the model in eval mode at θ₀ (no Jacobian stored). ``model`` itself is
    not changed. Raises TypeError for a non-module or a model whose output is not one tensor (at the
    first call), ValueError for a model without trainable parameters.

    Reference: Lee et al. 2019 (NeurIPS), eq. 3; Chizat, Oyallon & Bach 2019 (NeurIPS).
    """
    return LinearizedModel(model)


def relative_distance(outputs: torch.Tensor, linear_outputs: torch.Tensor, initial_outputs: torch.Tensor) -> float:
    """‖f_t(X) − f_lin,t(X)‖ / ‖f_t(X) − f₀(X)‖ (Frobenius norms over samples and outputs, in float64).

    How far the network has left its linearisation, relative to how far it has moved: 0 in the lazy
    (kernel) regime, of order 1 when its features moved (Fort et al. 2020, §4; Chizat et al. 2019).
    NaN when f_t(X) = f₀(X) (e.g. at initialisation). Shapes must agree (ValueError otherwise).
    """
    if not (outputs.shape == linear_outputs.shape == initial_outputs.shape):
        raise ValueError(f"outputs, linear_outputs and initial_outputs must have one shape, got "
                         f"{tuple(outputs.shape)}, {tuple(linear_outputs.shape)}, {tuple(initial_outputs.shape)}")
    f = outputs.detach().double()
    moved = float(torch.linalg.vector_norm(f - initial_outputs.detach().double()))
    if moved == 0:
        return math.nan
    return float(torch.linalg.vector_norm(f - linear_outputs.detach().double())) / moved


class TwinGN:
    """The Gauss–Newton step of a linearised model made by a GN solver of the model at θ₀.

    The linear model's Jacobian is J(x; θ₀) for every θ, so a GN solver built on a copy of the model
    held at θ₀ (``make_solver(copy)``, e.g. ``lambda m: ReversibleGN(m, lr=0.1)``) computes its step
    once it is given the linear model's outputs: ``solver.step(x, y, outputs=f_lin(x))`` realises
    J(x; θ₀) δθ = −α ε(f_lin(x)) by the solver's own rule (the reversible right inverse for
    :class:`~dynamics.gauss_newton.ReversibleGN`). The copy is moved by δθ, δθ is added to the linear
    model's θ, and the copy is put back at θ₀. ``step`` returns the solver's report (ρ is the linear
    model's residual). For :class:`~dynamics.gauss_newton.KernelGN` no twin is needed: it trains the
    linear model directly (its minimum-norm step).
    """

    def __init__(self, linear: LinearizedModel, make_solver: Callable[[nn.Module], object]) -> None:
        if not isinstance(linear, LinearizedModel):
            raise TypeError(f"TwinGN needs the LinearizedModel of dynamics.linearize.linearized, got "
                            f"{type(linear).__name__}")
        self.linear = linear
        self.anchor = copy.deepcopy(linear.base)
        for name, p in self.anchor.named_parameters():
            p.requires_grad_(name in linear.parameter_names)
        self.solver = make_solver(self.anchor)
        self.param_groups = self.solver.param_groups

    def step(self, x: torch.Tensor, y: torch.Tensor):
        with torch.no_grad():
            outputs = self.linear(x)
        report = self.solver.step(x, y, outputs=outputs)
        anchored = dict(self.anchor.named_parameters())
        with torch.no_grad():
            for name, initial in self.linear.initial_parameters().items():
                moved = anchored[name]
                self.linear.get_parameter(name).add_(moved - initial)
                moved.copy_(initial)
        return report

    def state_dict(self) -> dict:
        return self.solver.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.solver.load_state_dict(state)
