"""Coupling solvers against an explicit pseudo-inverse of the feature matrix A = [a, 1]."""

from __future__ import annotations

import itertools

import pytest
import torch

from dynamics.gauss_newton.solve import GramSolver, LinearSolver, SVDSolver, Truncation, gram_with_bias

F64 = torch.float64


def _expected(features, target):
    aug = torch.cat([features, torch.ones(features.shape[0], 1, dtype=features.dtype)], dim=1)
    pinv = torch.linalg.pinv(aug, rtol=1e-10)
    return pinv @ target, aug @ pinv @ target


def _check(solution, features, target, tol=1e-9):
    weight_aug_t, realised = _expected(features, target)
    weight, bias, got_realised = solution
    scale = float(weight_aug_t.abs().max())
    assert torch.allclose(weight.T, weight_aug_t[:-1], rtol=tol, atol=tol * scale)
    assert torch.allclose(bias, weight_aug_t[-1], rtol=tol, atol=tol * scale)
    assert torch.allclose(got_realised, realised, rtol=tol, atol=tol * float(target.abs().max()))


@pytest.mark.parametrize("n,h,pieces", list(itertools.product([1, 7, 40], [5, 60], [1, 2, 3, 5])))
def test_lower_triangle_gram_equals_dense(n, h, pieces):
    a = torch.randn(n, h, dtype=F64, generator=torch.Generator().manual_seed(n * h))
    assert torch.allclose(gram_with_bias(a, min(pieces, n)), a @ a.T + 1, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("n,h,seed", list(itertools.product([3, 12, 30], [8, 25], [0, 1])))
def test_gram_and_svd_solvers_equal_pinv(n, h, seed):
    gen = torch.Generator().manual_seed(seed)
    features = torch.relu(torch.randn(n, h, dtype=F64, generator=gen))
    target = torch.randn(n, 4, dtype=F64, generator=gen)
    rule = Truncation.named("exact", n)
    for solver in (GramSolver(features, rule, pieces=2 if n > 2 else 1), SVDSolver(features, rule)):
        expected_rank = min(n, h + 1)
        assert solver.rank == expected_rank and solver.full_rank == (expected_rank == n)
        _check(solver.solve(target), features, target, tol=1e-8)


@pytest.mark.parametrize("n,half,h", [(3, 4, 16), (5, 4, 16), (11, 4, 16), (9, 6, 6)])
def test_linear_solver_equals_pinv_of_explicit_features(n, half, h):
    gen = torch.Generator().manual_seed(n)
    proj = torch.randn(h, half, dtype=F64, generator=gen)
    inputs = torch.randn(n, half, dtype=F64, generator=gen)
    target = torch.randn(n, half, dtype=F64, generator=gen)
    solver = LinearSolver(inputs, proj, Truncation.named("exact", n))
    assert solver.rank == min(n, half + 1) and solver.full_rank == (n <= half + 1)
    _check(solver.solve(target), inputs @ proj.T, target)


def test_truncation_thresholds_drop_small_directions():
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(6, 20, dtype=F64, generator=gen)
    features = base.clone()
    features[5] = features[4] + 1e-9 * torch.randn(20, dtype=F64, generator=gen)  # nearly duplicated row
    assert GramSolver(features, Truncation(1e-12, 0.0)).rank == 5
    assert not GramSolver(features, Truncation(1e-12, 0.0)).full_rank
    assert GramSolver(features, Truncation(0.0, 0.0)).rank == 6
    assert SVDSolver(features, Truncation(0.0, 1e3)).rank < 6  # absolute threshold on squared singular values
