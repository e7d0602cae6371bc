"""Stability thresholds checked by running the optimisers on quadratics; Adam's preconditioner against its step."""

from __future__ import annotations

import math

import pytest
import torch

from dynamics.gauss_newton import ReversibleGN
from dynamics.models import RevMLP
from dynamics.sharpness import adam_preconditioner, stability_threshold

F64 = torch.float64


def grows(make, curvature: float, steps: int = 600) -> bool:
    """Whether ``make(params)`` diverges on L(θ) = ½ λ θ² (one parameter, θ₀ = 1)."""
    theta = torch.nn.Parameter(torch.ones(1, dtype=F64))
    optimizer = make([theta])
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * curvature * theta.square()).sum().backward()
        optimizer.step()
    return float(theta.detach().abs()) > 1.0


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=0.1),
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, dampening=0.3),
    lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.8, nesterov=True),
    lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=5.0),   # the penalty adds 5 to the curvature
])
def test_sgd_threshold_separates_stable_from_divergent(make):
    threshold = stability_threshold(make([torch.nn.Parameter(torch.ones(1))]))
    assert not grows(make, 0.9 * threshold)
    assert grows(make, 1.1 * threshold)


def test_adam_threshold_and_other_optimisers():
    param = [torch.nn.Parameter(torch.ones(1))]
    assert stability_threshold(torch.optim.Adam(param, lr=0.01)) == pytest.approx(38 / 0.01)   # Cohen et al. 2022
    assert stability_threshold(torch.optim.AdamW(param, lr=0.1, betas=(0.5, 0.9))) == pytest.approx(3 / 0.05)
    assert math.isnan(stability_threshold(torch.optim.RMSprop(param, lr=0.1)))
    assert math.isnan(stability_threshold(ReversibleGN(RevMLP(4, 6, 1, 2, seed=0), lr=0.1)))
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        stability_threshold("sgd")


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("kind", [torch.optim.Adam, torch.optim.AdamW])
def test_adam_step_is_minus_lr_times_inverse_preconditioner_times_first_moment(kind, amsgrad):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2, dtype=F64)
    optimizer = kind(model.parameters(), lr=0.03, betas=(0.8, 0.95), eps=1e-6, amsgrad=amsgrad, weight_decay=0.0)
    with pytest.raises(ValueError, match="no Adam state"):
        adam_preconditioner(optimizer, model)
    for step in range(6):
        x = torch.randn(5, 3, dtype=F64)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer.zero_grad()
        model(x).square().sum().backward()
        optimizer.step()
        preconditioner = adam_preconditioner(optimizer, model)
        for name, p in model.named_parameters():
            moment = optimizer.state[p]["exp_avg"]   # m_t, not bias-corrected
            expected = before[name] - 0.03 * moment / preconditioner[name]
            assert torch.allclose(p.detach(), expected, rtol=1e-12, atol=1e-15), (step, name)
    with pytest.raises(TypeError, match="Adam or AdamW"):
        adam_preconditioner(torch.optim.SGD(model.parameters(), lr=0.1), model)
