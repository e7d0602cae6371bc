"""KernelGN with the true softmax Hessian is the Moore–Penrose GGN step (issue 11, case 3).

Reference, in-test and independent of the code under test: dense J by jacrev, per-sample H = diag(p) − ppᵀ
by autograd, −α pinv(JᵀHJ) Jᵀ g with an explicit torch.linalg.pinv, float64.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from dynamics.gauss_newton import KernelGN, ReversibleGN
from dynamics.models import MLP, RevMLP
from test_gauss_newton_reference import dense_gn_step, dense_jacobian, flat_params, reference_targets

F64 = torch.float64


def _batch(dim, n, n_classes, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, dtype=F64, generator=gen), torch.randint(0, n_classes, (n,), generator=gen)


def _step(model, x, y, lr, **kwargs):
    before = flat_params(model)
    report = KernelGN(model, lr=lr, **kwargs).step(x, y)
    return report, flat_params(model) - before


GRID = [  # (dim, width, depth, O, N): P vs N·O — the last ones have N·O > P (J rank-deficient)
    (4, 6, 1, 3, 3), (5, 8, 2, 4, 5), (3, 10, 1, 5, 4), (6, 4, 2, 3, 7),
    (3, 2, 1, 3, 8), (2, 3, 1, 4, 9), (4, 2, 2, 3, 12),
]


@pytest.mark.parametrize("dim,width,depth,n_classes,n", GRID)
def test_exact_ce_step_is_the_dense_ggn_pseudo_inverse_step(dim, width, depth, n_classes, n):
    model = MLP(dim, width, depth, n_classes, activation="tanh", seed=n + width, dtype=F64)
    x, y = _batch(dim, n, n_classes, seed=3 * n + dim)
    jac = dense_jacobian(model, x)
    with torch.no_grad():
        logits = model(x)
    expected = dense_gn_step(jac, logits, y, "ce", "exact", 0.3)
    _, update = _step(model, x, y, 0.3, loss="ce", ce_target="exact")
    p = torch.softmax(logits, dim=1)
    ggn = jac.T @ torch.block_diag(*(torch.diag(q) - torch.outer(q, q) for q in p)) @ jac
    lam = torch.linalg.eigvalsh(ggn)
    kept = lam[lam > 1e-10 * lam.max()]
    tol = max(1e-10, 1e-15 * float(kept.max() / kept.min()))  # float64 accuracy of a kernel solve
    err = float((update - expected).norm() / expected.norm())
    assert err <= tol, (err, tol, jac.shape)


def test_issue_case_three_samples_three_classes():
    """Full row rank J: the step is −α (PJ)⁺ ε, not −α J⁺ ε (which was 8–77 % away), and logits move
    by −α ε up to a per-sample constant."""
    model = MLP(4, 16, 1, 3, seed=1, dtype=F64)
    x, y = _batch(4, 3, 3, seed=2)
    jac = dense_jacobian(model, x)
    assert int(torch.linalg.matrix_rank(jac)) == 9
    with torch.no_grad():
        logits = model(x)
    eps = reference_targets(logits, y, "ce", "exact")
    report, update = _step(model, x, y, 0.2, loss="ce", ce_target="exact")
    reference = dense_gn_step(jac, logits, y, "ce", "exact", 0.2)
    centring = torch.block_diag(*[torch.eye(3, dtype=F64) - 1 / 3] * 3)  # P, explicit
    projected = -0.2 * torch.linalg.pinv(centring @ jac) @ eps.reshape(-1)
    assert torch.allclose(update, reference, rtol=1e-9, atol=1e-12)
    assert torch.allclose(update, projected, rtol=1e-9, atol=1e-12)
    old = -0.2 * torch.linalg.pinv(jac) @ eps.reshape(-1)
    assert float((old - reference).norm() / reference.norm()) > 0.05  # the previous answer was wrong
    moved = (jac @ update).reshape(3, 3) + 0.2 * eps
    assert torch.allclose(moved - moved.mean(dim=1, keepdim=True), torch.zeros(3, 3, dtype=F64), atol=1e-10)
    assert report.residual <= 1e-10 and report.ranks == (6,)
    assert float(update.norm()) < float(old.norm())  # minimum norm


@pytest.mark.parametrize("loss,ce_target", [("mse", "identity"), ("ce", "identity")])
@pytest.mark.parametrize("dim,width,depth,n_classes,n", GRID[:4])
def test_unit_hessian_losses_still_give_minus_alpha_pinv_j_eps(loss, ce_target, dim, width, depth, n_classes, n):
    model = MLP(dim, width, depth, n_classes, activation="tanh", seed=n, dtype=F64)
    x, y = _batch(dim, n, n_classes, seed=n)
    jac = dense_jacobian(model, x)
    with torch.no_grad():
        eps = reference_targets(model(x), y, loss, ce_target)
    _, update = _step(model, x, y, 0.5, loss=loss, ce_target=ce_target)
    expected = -0.5 * torch.linalg.pinv(jac) @ eps.reshape(-1)
    assert float((update - expected).norm() / expected.norm()) <= 1e-9


@pytest.mark.parametrize("first_linear,n,depth", list(itertools.product([True, False], [3, 6], [2, 3])))
def test_reversible_exact_is_a_right_inverse_not_the_minimum_norm_step(first_linear, n, depth):
    """ReversibleGN realises J δθ = −α ε exactly but is longer than −α J⁺ ε; KernelGN is the min-norm twin."""
    model = RevMLP(8, 20, depth, 3, first_linear=first_linear, seed=n + depth, dtype=F64)
    x, y = _batch(8, n, 3, seed=n)
    jac = dense_jacobian(model, x)
    with torch.no_grad():
        eps = reference_targets(model(x), y, "ce")
    before = flat_params(model)
    ReversibleGN(model, lr=0.1).step(x, y)
    reversible = flat_params(model) - before
    minimum = -0.1 * torch.linalg.pinv(jac) @ eps.reshape(-1)
    assert torch.allclose(jac @ reversible, -0.1 * eps.reshape(-1), atol=1e-11)
    assert float(reversible.norm()) > 1.05 * float(minimum.norm())
