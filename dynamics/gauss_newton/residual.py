"""ρ measured independently of any solver: one forward-mode JVP with the update as tangent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from dynamics import functional, inputs
from dynamics.inputs import Inputs, OutputSelector
from dynamics.models.layers import eval_mode
from dynamics.ntk.products import jacobian_times


def trained_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Name → parameter for every parameter with requires_grad, in ``model.named_parameters()`` order."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def as_tangents(model: nn.Module, update: object) -> dict[str, torch.Tensor]:
    """The update as name → tensor over the trained parameters (missing names in a dict count as zero).

    Accepts a dict name → tensor, a list/tuple of tensors in parameters order, or one flat 1-D tensor
    of length P = Σ numel in parameters order.
    """
    params = trained_parameters(model)
    if isinstance(update, Mapping):
        unknown = sorted(set(update) - set(params))
        if unknown:
            raise ValueError(f"update names {unknown} are not trained parameters of {type(model).__name__}")
        tangents = {n: update.get(n, torch.zeros_like(p)) for n, p in params.items()}
    elif isinstance(update, torch.Tensor):
        total = sum(p.numel() for p in params.values())
        if update.dim() != 1 or update.numel() != total:
            raise ValueError(f"a flat update must have shape ({total},), got shape {tuple(update.shape)}")
        pieces = update.split([p.numel() for p in params.values()])
        tangents = {n: piece.view_as(p) for (n, p), piece in zip(params.items(), pieces)}
    elif isinstance(update, Sequence) and not isinstance(update, (str, bytes)):
        if len(update) != len(params):
            raise ValueError(f"update has {len(update)} tensors, the model has {len(params)} trained parameters")
        tangents = dict(zip(params, update))
    else:
        raise TypeError(f"update must be a dict, a sequence of tensors or a flat tensor, got {type(update).__name__}")
    for name, p in params.items():
        t = tangents[name]
        if not isinstance(t, torch.Tensor) or t.shape != p.shape:
            raise ValueError(f"update for {name!r} must have shape {tuple(p.shape)}, got {getattr(t, 'shape', t)!r}")
    return {n: t.to(dtype=params[n].dtype, device=params[n].device) for n, t in tangents.items()}


def output_change(model: nn.Module, x: Inputs, update: object, *, output: OutputSelector = None) -> torch.Tensor:
    """J δθ: the first-order change of the model's output on ``x`` (N, O) when the trained parameters
    move by ``update``. ``x`` and ``output``: as the model's forward takes it and which output is
    studied (:mod:`dynamics.inputs`).

    Evaluated in eval mode (the model's flags are restored) by one forward pass in forward-mode AD
    (``torch.autograd.forward_ad`` dual parameters through :func:`dynamics.functional.call`); J is never
    formed. Where an operation has no forward-mode derivative (CPU flash attention, a reentrant
    checkpoint), J δθ comes from the Jacobian rows (:func:`dynamics.ntk.products.jacobian_times`).
    """
    params = trained_parameters(model)
    tangents = as_tangents(model, update)
    x = inputs.check_inputs(x, "x")
    # Plain forward-mode AD (torch.autograd.forward_ad) on parameters that require grad, under
    # enable_grad: modules with a no-grad fast path that forward AD cannot go through
    # (nn.MultiheadAttention's native kernel in eval mode) take their plain path, and activation
    # checkpointing (whose saved-tensor hooks torch.func refuses) is differentiated as it runs.
    try:
        with eval_mode(model), torch.enable_grad(), fwAD.dual_level():
            duals = {name: fwAD.make_dual(p.detach().requires_grad_(True), tangents[name])
                     for name, p in params.items()}
            result = functional.call(model, duals, x, output)
            change = fwAD.unpack_dual(result).tangent
    except (NotImplementedError, RuntimeError):   # an operation without a forward-mode derivative
        return jacobian_times(model, x, tangents, output)
    n = inputs.n_samples(x)
    if change is None:   # the output does not depend on the trained parameters
        return torch.zeros_like(result.detach()).reshape(n, -1)
    return change.detach().reshape(n, -1)


def gn_residual(model: nn.Module, x: Inputs, update: object, target: torch.Tensor, *,
                output: OutputSelector = None) -> float:
    """ρ = ‖J δθ − target‖ / ‖target‖, J the Jacobian of the outputs at the *current* parameters.

    Args:
        model: any nn.Module mapping (N, ...) to (N, O) (outputs are flattened after the sample dim).
        x: the batch as the model's forward takes it (:mod:`dynamics.inputs`). update: δθ (see
            :func:`as_tangents`). output: which output is f (:func:`dynamics.inputs.select_output`).
        target: the desired output change (N, O); for a GN step with lr α, target = −α ε.
    Call it before applying the update (J is taken at the parameters the step started from).
    Returns 0.0 when target and J δθ are both zero, inf when only target is zero.
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    change = output_change(model, x, update, output=output)
    if target.shape != change.shape:
        raise ValueError(f"target must have the output shape {tuple(change.shape)}, got {tuple(target.shape)}")
    target = target.to(change.dtype)
    error = float(torch.linalg.vector_norm(change - target))
    scale = float(torch.linalg.vector_norm(target))
    if scale == 0:
        return 0.0 if error == 0 else float("inf")
    return error / scale
