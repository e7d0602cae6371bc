"""A module registered under two names (``self.branch = nn.Sequential(self.shared, ...)``) through
``empirical_ntk`` (found by helper break-1). torch.func.functional_call with tie_weights=True left plain
tensors in the shared module: afterwards the model's shared layer no longer received gradients and
stopped training, silently (fixed by dynamics/functional.py: tie_weights=False, every slot once).
Reference: per-sample, per-output gradients by plain autograd on an untouched copy."""

from __future__ import annotations

import copy

import torch
from torch import nn

from dynamics.ntk import empirical_ntk


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.shared, self.head = nn.Linear(4, 5), nn.Linear(5, 5), nn.Linear(5, 2)
        self.branch = nn.Sequential(self.shared, nn.Tanh())   # the same module under a second name

    def forward(self, x):
        return self.head(self.branch(self.shared(torch.tanh(self.inp(x)))))


def _autograd_ntk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    params = list(model.parameters())
    rows = []
    for i in range(x.shape[0]):
        out = model(x[i:i + 1])[0]
        for o in range(out.shape[0]):
            grads = torch.autograd.grad(out[o], params, retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
    jac = torch.stack(rows).reshape(x.shape[0], -1, rows[0].numel())
    return torch.einsum("nop,mop->nm", jac, jac)


def test_the_ntk_of_a_model_with_a_shared_module_leaves_the_model_trainable():
    model = _Shared().double()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    reference = _autograd_ntk(copy.deepcopy(model), x)
    registered = list(model.parameters())
    torch.testing.assert_close(empirical_ntk(model, x, trace=True), reference, rtol=1e-10, atol=1e-12)
    assert all(type(p) is nn.Parameter for p in model.shared._parameters.values())
    model(x).pow(2).sum().backward()
    assert all(p.grad is not None for p in registered)          # the shared layer still trains
