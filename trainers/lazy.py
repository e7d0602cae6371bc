"""Lazy-regime diagnostics the training loop records at checkpoints (issue 23; docs/guide/lazy-regime.md).

``train.linearized = true`` — the linearised twin (:mod:`dynamics.linearize`): the first-order Taylor
model f_lin(x; θ) = f(x; θ₀) + J(x; θ₀)(θ − θ₀) of the run's model at its initialisation, trained on
the same (augmented) mini-batches, in the same order, by the same optimiser kind and options (a fresh
optimiser at every phase switch, like the model's). How each kind steps the linear model:

- ``sgd``, ``adam`` and every ``torch.optim`` kind: the same class on the linear model's parameters
  (gradients through the ``torch.func.jvp`` of its forward);
- ``kgn``: :class:`~dynamics.gauss_newton.KernelGN` on the linear model — its exact, minimum-norm GN step
  (the linear model's Jacobian is J(x; θ₀), its NTK the model's initial NTK);
- ``gn``: the linear model is not reversible, so :class:`~dynamics.gauss_newton.ReversibleGN`'s right
  inverse is taken where the linear model's Jacobian lives, on a copy of the RevMLP held at θ₀, for
  the targets of the linear model's outputs (:class:`dynamics.linearize.TwinGN`). Both runs then use
  the same rule (a right inverse of the current Jacobian), so for α → 0 the two stay together; the
  minimum-norm step would differ by a null-space component and would not.

Checkpoint scalars (``checkpoints`` group; NaN at step 0, where f_t = f₀):
``linearized_distance_probe`` / ``linearized_distance_test`` = ‖f_t(X) − f_lin,t(X)‖ / ‖f_t(X) − f₀(X)‖ on
the probe set / the test evaluation set; ``linearized_train_loss``, ``linearized_train_acc``,
``linearized_test_loss``, ``linearized_test_acc`` of the linear model on the evaluation sets.

``train.sharpness = true`` — on the probe set (a fixed set of training examples), with the model in eval
mode: ``sharpness`` = λ_max of the loss Hessian, ``ggn_sharpness`` = λ_max of the GGN
(:func:`dynamics.curvature.top_eigenvalues`, Lanczos), ``preconditioned_sharpness`` = λ_max(P^{-1/2} H
P^{-1/2}) with Adam's preconditioner (Adam/AdamW runs after their first step; NaN otherwise) and
``sharpness_threshold`` = the stability threshold of the optimiser of the latest updates for the
sharpness it is compared with (2/η for SGD's ``sharpness``, 38/η for Adam's ``preconditioned_sharpness``
with β₁ = 0.9; NaN for GN, for other optimisers and for Adam before its first step;
:mod:`dynamics.sharpness`). A Lanczos run that does not converge stores NaN with a warning.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import torch
from torch import nn

from dynamics.curvature import top_eigenvalues
from dynamics.gauss_newton import ReversibleGN
from dynamics.linearize import LINEAR_SCALARS, LinearizedModel, TwinGN, linearized, relative_distance
from dynamics.models.layers import eval_mode
from dynamics.sharpness import SHARPNESS_SCALARS, adam_preconditioner, is_adam, stability_threshold
from trainers.optimizer_options import OptimizerOptions
from trainers.optimizers import FirstOrder, make_optimizer
from trainers.phases import Phase, PhaseSteppers

__all__ = ["LINEAR_SCALARS", "SHARPNESS_SCALARS", "LinearTwin", "checkpoint_scalars", "quiet_undefined",
           "sharpness_scalars", "twin_optimizer"]


def twin_optimizer(name: str, options: OptimizerOptions, linear: LinearizedModel, loss: str):
    """The optimiser that trains the linear twin as optimiser ``name`` (``options``) trains the model:
    an object with ``step(x, y)``, ``state_dict()`` and ``load_state_dict()`` (module docstring)."""
    if options.kind == "gn":
        return TwinGN(linear, lambda anchor: ReversibleGN(anchor, loss=loss, **options.kwargs()))
    stepper = make_optimizer(name, options, linear, loss)
    return stepper.solver if hasattr(stepper, "solver") else stepper   # KernelGN itself: no gradient norm needed


@torch.no_grad()
def outputs(model: nn.Module, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """model(x) in eval mode, in chunks of ``chunk`` rows."""
    with eval_mode(model):
        return torch.cat([model(x[i:i + chunk]) for i in range(0, len(x), chunk)])


class LinearTwin:
    """The linearised twin of a run: built from the model as initialised (θ₀), stepped after every
    update of the model on the same batch, evaluated at checkpoints."""

    def __init__(self, model: nn.Module, plan: list[Phase], options: dict[str, OptimizerOptions], loss: str,
                 probe_x: torch.Tensor, test_x: torch.Tensor) -> None:
        self.linear = linearized(model)
        self.loss = loss
        self.steppers = PhaseSteppers(plan, lambda name: twin_optimizer(name, options[name], self.linear, loss))
        self.stepper = self.steppers.at(0)
        self.probe_x, self.test_x = probe_x, test_x
        self.initial = (outputs(model, probe_x), outputs(model, test_x))

    def step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """The twin's update ``step + 1`` on the batch (x, y) the model was just updated on."""
        self.stepper = self.steppers.at(step)
        self.stepper.step(x, y)

    def scalars(self, model: nn.Module, evaluate, eval_train, eval_test) -> dict[str, float]:
        """The checkpoint scalars of the module docstring; ``evaluate(model, x, y, loss)`` → (loss, acc)."""
        probe, test = outputs(model, self.probe_x), outputs(model, self.test_x)
        out = {"linearized_distance_probe": relative_distance(probe, outputs(self.linear, self.probe_x),
                                                              self.initial[0]),
               "linearized_distance_test": relative_distance(test, outputs(self.linear, self.test_x),
                                                             self.initial[1])}
        with eval_mode(self.linear):
            out["linearized_train_loss"], out["linearized_train_acc"] = evaluate(self.linear, *eval_train, self.loss)
            out["linearized_test_loss"], out["linearized_test_acc"] = evaluate(self.linear, *eval_test, self.loss)
        return out

    def state(self) -> dict:
        return {"model": {k: v.clone() for k, v in self.linear.state_dict().items()},
                "optimizer": self.stepper.state_dict(), "phase": max(self.steppers.index, 0)}

    def restore(self, state: dict) -> None:
        self.linear.load_state_dict(state["model"])
        self.stepper = self.steppers.use(int(state.get("phase", 0)))
        self.stepper.load_state_dict(state["optimizer"])


def checkpoint_scalars(run, evaluate) -> tuple[dict[str, float], set[str]]:
    """The lazy-regime scalars of a checkpoint of ``run`` (a :class:`trainers.loop.RunState`) and the
    names among them that are NaN by definition here (the distances at step 0; the preconditioned
    sharpness and the threshold where the optimiser has none, see the module docstring), which the
    caller stores without the Recorder's non-finite warning."""
    e, out = run.experiment, {}
    if run.twin is not None:
        out.update(run.twin.scalars(run.model, evaluate, e.eval_train, e.eval_test))
    if run.sharpness:
        out.update(sharpness_scalars(run.model, run.stepper, e.x[e.probe], e.y[e.probe], run.loss))
    undefined = {"linearized_distance_probe", "linearized_distance_test"} if run.step == 0 else set()
    undefined |= {"preconditioned_sharpness", "sharpness_threshold"}   # NaN only where undefined (docstring)
    return out, {name for name in undefined if name in out and math.isnan(out[name])}


@contextmanager
def quiet_undefined(names: set[str]):
    """Silence the Recorder's non-finite warning for ``names`` (NaN by definition, not by failure)."""
    with warnings.catch_warnings():
        for name in names:
            warnings.filterwarnings("ignore", message=f"non-finite {name}=nan", category=RuntimeWarning)
        yield


def sharpness_scalars(model: nn.Module, stepper, x: torch.Tensor, y: torch.Tensor, loss: str) -> dict[str, float]:
    """``sharpness``, ``ggn_sharpness``, ``preconditioned_sharpness``, ``sharpness_threshold`` of the
    module docstring on (x, y); ``stepper`` is the run's current optimiser wrapper."""
    optimizer = stepper.optimizer if isinstance(stepper, FirstOrder) else None
    out = dict.fromkeys(SHARPNESS_SCALARS, math.nan)
    out["sharpness"] = _top(model, x, y, loss, "hessian")
    out["ggn_sharpness"] = _top(model, x, y, loss, "ggn")
    if optimizer is not None and not is_adam(optimizer):
        out["sharpness_threshold"] = stability_threshold(optimizer)
    elif optimizer is not None:
        try:
            preconditioner = adam_preconditioner(optimizer, model)
        except ValueError:   # before the first step: no second moment, no preconditioned sharpness to compare
            preconditioner = None
        if preconditioner is not None:
            out["preconditioned_sharpness"] = _top(model, x, y, loss, "hessian", preconditioner)
            out["sharpness_threshold"] = stability_threshold(optimizer)
    return out


def _top(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str, matrix: str, preconditioner=None) -> float:
    try:
        return float(top_eigenvalues(model, x, y, loss=loss, matrix=matrix, preconditioner=preconditioner)[0])
    except RuntimeError as error:   # Lanczos did not converge: the checkpoint keeps NaN
        warnings.warn(f"sharpness ({matrix}) not computed: {error}", RuntimeWarning, stacklevel=2)
        return math.nan
