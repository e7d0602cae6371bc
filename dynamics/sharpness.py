"""Edge-of-stability bookkeeping: the step-size thresholds sharpness is compared with, and Adam's
preconditioner.

A first-order method is stable on a quadratic with curvature λ only when λ is below a threshold set
by its step size (Cohen et al. 2021, "Gradient descent on neural networks typically occurs at the
edge of stability", §2 and App. A; Cohen et al. 2022, "Adaptive gradient methods at the edge of
stability", §2). :func:`stability_threshold` gives it for a ``torch.optim`` optimiser (first parameter
group; learning rate η):

- SGD, heavy-ball momentum μ, dampening τ: λ_max(H) < 2(1 + μ) / ((1 − τ) η) − wd (2/η for plain
  SGD; weight decay wd adds wd·I to the Hessian of the penalised loss);
- SGD with Nesterov momentum (τ = 0): λ_max(H) < 2(1 + μ) / ((1 + 2μ) η) − wd;
- Adam / AdamW (β₁): λ_max(P⁻¹H) < (2 + 2β₁) / ((1 − β₁) η) (38/η for β₁ = 0.9), the
  *preconditioned sharpness* with P of :func:`adam_preconditioner`;
- anything else (Gauss–Newton steps, other optimisers): NaN — no threshold of this form.

Adam's preconditioner after t steps (Cohen et al. 2022, eq. 2, with torch's bias corrections):
P_t = (1 − β₁ᵗ) · diag(√v̂_t + ε), v̂_t = v_t / (1 − β₂ᵗ), v_t the exponential average of squared
gradients (``exp_avg_sq``; ``max_exp_avg_sq`` with amsgrad), so that Adam's step is
θ_{t+1} = θ_t − η P_t⁻¹ m_t with m_t the (uncorrected) first moment. Weight decay is not part of H
for Adam: the preconditioned sharpness is that of the loss.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Checkpoint scalars of a run with ``train.sharpness`` (trainers.lazy; dynamics.store.attributes).
SHARPNESS_SCALARS = ("sharpness", "ggn_sharpness", "preconditioned_sharpness", "sharpness_threshold")


def _group(optimizer: torch.optim.Optimizer) -> dict:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    return optimizer.param_groups[0]


def is_adam(optimizer: torch.optim.Optimizer) -> bool:
    """True for ``torch.optim.Adam`` and ``AdamW`` (the optimisers :func:`adam_preconditioner` reads)."""
    return isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))


def stability_threshold(optimizer: torch.optim.Optimizer) -> float:
    """The largest sharpness at which ``optimizer``'s step is stable on a quadratic (module docstring):
    compared with λ_max(H) for SGD, with the preconditioned sharpness for Adam/AdamW; NaN otherwise."""
    group = _group(optimizer)
    lr = float(group["lr"])
    if is_adam(optimizer):
        beta1 = float(group["betas"][0])
        return (2 + 2 * beta1) / ((1 - beta1) * lr)
    if type(optimizer) is torch.optim.SGD:
        momentum, dampening = float(group.get("momentum", 0.0)), float(group.get("dampening", 0.0))
        decay = float(group.get("weight_decay", 0.0))
        if group.get("nesterov", False):
            return 2 * (1 + momentum) / ((1 + 2 * momentum) * lr) - decay
        if momentum > 0 and dampening >= 1:
            return math.nan   # the momentum buffer never sees a gradient after the first step
        return 2 * (1 + momentum) / ((1 - dampening if momentum > 0 else 1.0) * lr) - decay
    return math.nan


def adam_preconditioner(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, torch.Tensor]:
    """Adam's P_t = (1 − β₁ᵗ) · (√(v_t / (1 − β₂ᵗ)) + ε) per trained parameter of ``model``, by name.

    ``optimizer`` is the ``torch.optim.Adam``/``AdamW`` training ``model``. Pass the result as
    ``preconditioner=`` to :func:`dynamics.curvature.top_eigenvalues` for the preconditioned sharpness
    λ_max(P^{-1/2} H P^{-1/2}). TypeError for another optimiser; ValueError when a trained parameter
    has no Adam state yet (before the first step) or is not in the optimiser.
    """
    if not is_adam(optimizer):
        raise TypeError(f"adam_preconditioner needs torch.optim.Adam or AdamW, got {type(optimizer).__name__}")
    group = _group(optimizer)
    beta1, beta2 = (float(b) for b in group["betas"])
    eps, amsgrad = float(group["eps"]), bool(group.get("amsgrad", False))
    owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
    out = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        state = optimizer.state.get(p, {})
        if id(p) not in owned or "exp_avg_sq" not in state:
            raise ValueError(f"parameter {name!r} has no Adam state (the optimiser has not stepped it yet)")
        steps = float(state["step"])
        second = state["max_exp_avg_sq"] if amsgrad else state["exp_avg_sq"]
        corrected = second.detach().double() / (1 - beta2 ** steps)
        out[name] = (1 - beta1 ** steps) * (corrected.sqrt() + eps)
    return out
