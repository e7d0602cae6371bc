"""KernelGN against −α pinv(J) ε with a dense jacrev J, damping, and the exact-twin identity with ReversibleGN."""

from __future__ import annotations

import copy

import pytest
import torch

from dynamics.gauss_newton import KernelGN, ReversibleGN, gn_residual
from dynamics.models import MLP, RevMLP
from test_gauss_newton_reference import dense_gn_step, dense_jacobian, dense_residual, flat_params, reference_targets

F64 = torch.float64


def _batch(dim, n, n_classes, seed, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, dtype=dtype, generator=gen), torch.randint(0, n_classes, (n,), generator=gen)


def _kernel_step(model, x, y, **kwargs):
    jac = dense_jacobian(model, x)
    with torch.no_grad():
        logits = model(x)
    eps = reference_targets(logits, y, kwargs.get("loss", "ce"), kwargs.get("ce_target", "identity"))
    before = flat_params(model)
    report = KernelGN(model, **kwargs).step(x, y)
    return report, flat_params(model) - before, jac, eps


@pytest.mark.parametrize("make,n,loss,ce_target", [
    (lambda: RevMLP(8, 24, 2, 3, seed=1, dtype=F64), 6, "ce", "identity"),
    (lambda: RevMLP(6, 16, 3, 4, first_linear=False, seed=2, dtype=F64), 5, "mse", "identity"),
    (lambda: MLP(5, 12, 2, 3, activation="tanh", seed=3, dtype=F64), 7, "ce", "exact"),
    (lambda: MLP(4, 9, 1, 2, seed=4, dtype=F64), 4, "mse", "identity"),
])
def test_undamped_kernel_step_equals_dense_pseudo_inverse(make, n, loss, ce_target):
    model = make()
    x, y = _batch(model.dim, n, model.n_classes, seed=n)
    with torch.no_grad():
        logits = model(x)
    report, update, jac, eps = _kernel_step(model, x, y, lr=0.4, loss=loss, ce_target=ce_target)
    expected = dense_gn_step(jac, logits, y, loss, ce_target, 0.4)  # −α (JᵀHJ)⁺ Jᵀ g
    assert torch.allclose(update, expected, rtol=1e-9, atol=1e-11 * float(expected.abs().max()))
    if ce_target == "identity":  # H ∝ I: the same as −α J⁺ ε
        assert torch.allclose(update, -0.4 * torch.linalg.pinv(jac) @ eps.reshape(-1), rtol=1e-9,
                              atol=1e-11 * float(expected.abs().max()))
        assert dense_residual(jac, update, -0.4 * eps) <= 1e-10
    assert report.residual <= 1e-10
    size = n * (model.n_classes - (ce_target == "exact"))
    assert report.full_rank == (True,) and report.ranks == (size,)


def test_rank_deficient_batch_uses_the_pseudo_inverse():
    model = MLP(5, 10, 2, 3, seed=5, dtype=F64)
    x, y = _batch(5, 4, 3, seed=6)
    x, y = torch.cat([x, x[:2]]), torch.cat([y, y[:2]])  # duplicated samples: J has repeated rows
    report, update, jac, eps = _kernel_step(model, x, y, lr=1.0)
    expected = -torch.linalg.pinv(jac, rtol=1e-10) @ eps.reshape(-1)
    assert report.full_rank == (False,) and report.ranks == (12,)
    assert torch.allclose(update, expected, rtol=1e-8, atol=1e-10 * float(expected.abs().max()))


@pytest.mark.parametrize("damping", [1e-3, 0.5, 10.0])
def test_damped_kernel_step_is_levenberg_marquardt(damping):
    model = MLP(6, 8, 2, 3, activation="gelu", seed=7, dtype=F64)
    x, y = _batch(6, 5, 3, seed=8)
    report, update, jac, eps = _kernel_step(model, x, y, lr=0.3, damping=damping, chunk_size=2)
    kernel = jac @ jac.T
    expected = -0.3 * jac.T @ torch.linalg.solve(kernel + damping * torch.eye(15, dtype=F64), eps.reshape(-1))
    assert torch.allclose(update, expected, rtol=1e-9, atol=1e-12)
    assert report.residual == pytest.approx(dense_residual(jac, update, -0.3 * eps), rel=1e-8)


@pytest.mark.parametrize("first_linear,n,loss", [(True, 3, "ce"), (False, 6, "mse"), (True, 8, "ce")])
def test_exact_twin_reversible_and_kernel_updates(first_linear, n, loss):
    """Both realise J δθ = −α ε; the kernel step is the minimum-norm one, so it is the orthogonal
    projection of the reversible step onto the row space of J: δθ_K = J⁺ J δθ_R (they differ by a
    null-space component and are not equal as vectors)."""
    model = RevMLP(8, 20, 3, 3, first_linear=first_linear, seed=9, dtype=F64)
    x, y = _batch(8, n, 3, seed=10)
    jac = dense_jacobian(model, x)
    with torch.no_grad():
        desired = -0.5 * reference_targets(model(x), y, loss)
    start = flat_params(model)
    rev, ker = copy.deepcopy(model), copy.deepcopy(model)
    ReversibleGN(rev, lr=0.5, loss=loss).step(x, y)
    KernelGN(ker, lr=0.5, loss=loss).step(x, y)
    d_rev, d_ker = flat_params(rev) - start, flat_params(ker) - start
    assert dense_residual(jac, d_rev, desired) <= 1e-10 and dense_residual(jac, d_ker, desired) <= 1e-10
    projected = torch.linalg.pinv(jac) @ (jac @ d_rev)
    assert torch.allclose(projected, d_ker, rtol=1e-8, atol=1e-10 * float(d_ker.abs().max()))
    assert float(d_ker.norm()) <= float(d_rev.norm()) * (1 + 1e-12)
    assert abs(float(d_ker @ (d_rev - d_ker))) <= 1e-9 * float(d_rev.norm()) ** 2


def test_float32_kernel_step_within_float32_tolerance():
    model = MLP(6, 32, 2, 3, seed=11)
    x, y = _batch(6, 8, 3, seed=12, dtype=torch.float32)
    twin = copy.deepcopy(model).double()
    report = KernelGN(model, lr=0.5).step(x, y)
    update = flat_params(model).double() - flat_params(twin)
    jac = dense_jacobian(twin, x.double())
    with torch.no_grad():
        eps = reference_targets(twin(x.double()), y, "ce")
    expected = -0.5 * torch.linalg.pinv(jac) @ eps.reshape(-1)
    assert float((update - expected).norm() / expected.norm()) <= 1e-3  # stated float32 tolerance
    assert report.residual <= 1e-3


@pytest.mark.parametrize("form", ["dict", "list", "flat"])
def test_gn_residual_accepts_every_update_form_and_matches_dense(form):
    model = MLP(5, 7, 2, 3, seed=13, dtype=F64)
    x, _ = _batch(5, 4, 3, seed=14)
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(15)
    update = {n: torch.randn(p.shape, dtype=F64, generator=gen) for n, p in params.items()}
    flat = torch.cat([u.reshape(-1) for u in update.values()])
    target = torch.randn(4, 3, dtype=F64, generator=gen)
    jac = dense_jacobian(model, x)
    given = {"dict": update, "list": list(update.values()), "flat": flat}[form]
    assert gn_residual(model, x, given, target) == pytest.approx(dense_residual(jac, flat, target), rel=1e-12)


@pytest.mark.parametrize("update,error,match", [
    ({"nope": torch.zeros(1)}, ValueError, "nope"),
    (torch.zeros(5), ValueError, r"shape \(\d+,\)"),
    ([torch.zeros(1)], ValueError, "1 tensors"),
    ("bad", TypeError, "str"),
])
def test_gn_residual_rejects_bad_updates(update, error, match):
    model = MLP(5, 7, 1, 3, seed=0, dtype=F64)
    with pytest.raises(error, match=match):
        gn_residual(model, torch.zeros(2, 5, dtype=F64), update, torch.ones(2, 3, dtype=F64))
