"""Brute-force references for the model-family tests, written without the code under test.

- :func:`dense_jacobian`: the per-sample Jacobian J (N, O, P) of the studied output with respect to
  the trained parameters (deduplicated, ``named_parameters`` order), by explicit loops: one forward
  pass per sample (eval mode, on a float64 deep copy), one ``torch.autograd.backward`` per output,
  reading ``.grad`` — plain autograd, no torch.func, no ``dynamics`` code.
- :func:`dense_ntk`: Θ[n, m, o, p] = J[n, o] · J[m, p] from it.
- :func:`hooked_outputs`: module outputs copied by forward hooks, by hand.
- :func:`pinv_gn_step`: δθ = −α (JᵀHJ)⁺ Jᵀ g for MSE / identity-CE (H = I per sample, g = ε) from the
  dense J and an explicit ``torch.linalg.pinv``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn


def _call(model: nn.Module, x):
    if isinstance(x, Mapping):
        return model(**x)
    if isinstance(x, (tuple, list)):
        return model(*x)
    return model(x)


def _row(x, n: int):
    if isinstance(x, Mapping):
        return {k: v[n:n + 1] for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(v[n:n + 1] for v in x)
    return x[n:n + 1]


def _studied(out):
    if isinstance(out, Mapping):
        return out["logits"]
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def _float64(x):
    cast = lambda t: t.double() if t.is_floating_point() else t  # noqa: E731
    if isinstance(x, Mapping):
        return {k: cast(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(cast(v) for v in x)
    return cast(x)


def n_rows(x) -> int:
    if isinstance(x, Mapping):
        return next(iter(x.values())).shape[0]
    if isinstance(x, (tuple, list)):
        return x[0].shape[0]
    return x.shape[0]


def trained(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def dense_jacobian(model: nn.Module, x) -> torch.Tensor:
    """J (N, O, P) in float64 by loops of plain autograd (module docstring)."""
    twin = copy.deepcopy(model).double().eval()
    params = list(trained(twin).values())
    x = _float64(x)
    rows = []
    for n in range(n_rows(x)):
        out = _studied(_call(twin, _row(x, n))).reshape(-1)
        sample = []
        for o in range(out.numel()):
            for p in params:
                p.grad = None
            torch.autograd.backward(out[o], retain_graph=True)
            sample.append(torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in params]))
        rows.append(torch.stack(sample))
    return torch.stack(rows)


def dense_ntk(model: nn.Module, x1, x2=None) -> torch.Tensor:
    j1 = dense_jacobian(model, x1)
    j2 = j1 if x2 is None else dense_jacobian(model, x2)
    return torch.einsum("nop,mqp->nmoq", j1, j2)


def traced(full: torch.Tensor) -> torch.Tensor:
    return torch.diagonal(full, dim1=2, dim2=3).sum(-1)


def hooked_outputs(model: nn.Module, x, names: list[str]) -> dict[str, torch.Tensor]:
    """Outputs of the named modules (eval mode, no grad), copied in forward hooks, flattened per sample."""
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    handles = [modules[name].register_forward_hook(
        lambda m, a, out, name=name: seen.__setitem__(name, (out[0] if isinstance(out, tuple) else out).detach().clone()))
        for name in names]
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            _call(model, x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return {name: seen[name].reshape(seen[name].shape[0], -1) for name in names}


def pinv_gn_step(model: nn.Module, x, epsilon: torch.Tensor, lr: float) -> torch.Tensor:
    """Flat δθ = −α (JᵀJ)⁺ Jᵀ ε (float64), ε (N, O) the output-space target, J dense."""
    jac = dense_jacobian(model, x)
    j = jac.reshape(-1, jac.shape[-1])
    return -lr * torch.linalg.pinv(j.T @ j, hermitian=True) @ (j.T @ epsilon.double().reshape(-1))
