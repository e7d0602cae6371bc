"""ρ measured independently of any solver: one forward-mode JVP with the update as tangent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from dynamics.models.layers import eval_mode


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


def output_change(model: nn.Module, x: torch.Tensor, update: object) -> torch.Tensor:
    """J δθ: the first-order change of ``model(x)`` (N, O) when the trained parameters move by ``update``.

    Evaluated in eval mode (the model's flags are restored), with torch.func.jvp over
    torch.func.functional_call; J is never formed.
    """
    params = trained_parameters(model)
    tangents = as_tangents(model, update)
    names = list(params)

    def outputs(*values: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, dict(zip(names, values)), (x,), strict=False)

    with eval_mode(model), torch.no_grad():
        _, change = torch.func.jvp(outputs, tuple(p.detach() for p in params.values()),
                                   tuple(tangents[n] for n in names))
    return change.reshape(x.shape[0], -1)


def gn_residual(model: nn.Module, x: torch.Tensor, update: object, target: torch.Tensor) -> float:
    """ρ = ‖J δθ − target‖ / ‖target‖, J the Jacobian of the outputs at the *current* parameters.

    Args:
        model: any nn.Module mapping (N, ...) to (N, O) (outputs are flattened after the sample dim).
        x: the batch (N, ...). update: δθ (see :func:`as_tangents`).
        target: the desired output change (N, O); for a GN step with lr α, target = −α ε.
    Call it before applying the update (J is taken at the parameters the step started from).
    Returns 0.0 when target and J δθ are both zero, inf when only target is zero.
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    change = output_change(model, x, update)
    if target.shape != change.shape:
        raise ValueError(f"target must have the output shape {tuple(change.shape)}, got {tuple(target.shape)}")
    target = target.to(change.dtype)
    error = float(torch.linalg.vector_norm(change - target))
    scale = float(torch.linalg.vector_norm(target))
    if scale == 0:
        return 0.0 if error == 0 else float("inf")
    return error / scale
