"""One truncation rule, honoured by every solver (issue 11, case 4): λ = s² kept iff λ > max(atol, rtol·λ_max).

Feature matrices A = [a, 1] are built with a known singular spectrum, so the expected rank is counted
from the spectrum itself and the expected update is an explicit torch.linalg.pinv with the same cut
expressed on singular values (rtol_s = √rtol, atol_s = √atol).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dynamics.gauss_newton import KernelGN, ReversibleGN
from dynamics.gauss_newton.solve import GramSolver, LinearSolver, SVDSolver, Truncation
from dynamics.models import RevMLP
from test_gauss_newton_reference import dense_jacobian, flat_params

F64 = torch.float64


def features_with_spectrum(singular_values: torch.Tensor, h: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(a (N, h), s) such that A = [a, 1] has singular values exactly s (up to round-off)."""
    n = singular_values.numel()
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(h + 1, n, dtype=F64, generator=gen))
    matrix = u @ torch.diag(singular_values) @ v.T  # (N, h+1)
    q = torch.linalg.pinv(matrix) @ torch.ones(n, dtype=F64)
    c = 1.0 / float(q.norm())
    q = q / q.norm()  # matrix q = c·1
    e = torch.zeros(h + 1, dtype=F64)
    e[-1] = 1.0
    w = q - e
    householder = torch.eye(h + 1, dtype=F64) - 2 * torch.outer(w, w) / (w @ w)  # maps e ↔ q
    aug = matrix @ householder / c  # last column = 1
    assert torch.allclose(aug[:, -1], torch.ones(n, dtype=F64), atol=1e-9)
    return aug[:, :-1].contiguous(), singular_values / c


def expected_rank(s: torch.Tensor, rtol: float, atol: float) -> int:
    lam = s.square()
    return int((lam > max(atol, rtol * float(lam.max()))).sum())


def reference(a: torch.Tensor, target: torch.Tensor, rtol: float, atol: float) -> tuple[torch.Tensor, torch.Tensor]:
    aug = torch.cat([a, torch.ones(a.shape[0], 1, dtype=F64)], dim=1)
    pinv = torch.linalg.pinv(aug, rtol=math.sqrt(rtol), atol=math.sqrt(atol))
    return pinv @ target, aug @ pinv @ target


SPECTRA = {  # geometric spectra with ratios well away from the tested cuts
    "48-samples-1e-4": lambda: torch.logspace(0, -4.03, 48, dtype=F64),
    "30-samples-1e-7": lambda: torch.logspace(1, -6.07, 30, dtype=F64),
    "20-samples-two-clusters": lambda: torch.cat([torch.logspace(0, -1, 12, dtype=F64), torch.logspace(-5.1, -6, 8, dtype=F64)]),
}


@pytest.mark.parametrize("spectrum", list(SPECTRA))
@pytest.mark.parametrize("rtol,atol_fraction", [(1e-4, 0.0), (1e-9, 0.0), (0.0, 3e-7), (1e-9, 1e-6), (1e-6, 1e-3)])
def test_gram_and_svd_solvers_follow_the_rule_on_known_spectra(spectrum, rtol, atol_fraction):
    a, s = features_with_spectrum(SPECTRA[spectrum](), 80, seed=len(spectrum))
    atol = atol_fraction * float(s.max()) ** 2  # an absolute cut that binds for this spectrum's scale
    target = torch.randn(a.shape[0], 5, dtype=F64, generator=torch.Generator().manual_seed(1))
    rank = expected_rank(s, rtol, atol)
    weight_ref, realised_ref = reference(a, target, rtol, atol)
    lam = s.square()
    kept = lam[lam > max(atol, rtol * float(lam.max()))]
    for solver in (GramSolver(a, Truncation(rtol, atol)), SVDSolver(a, Truncation(rtol, atol))):
        assert solver.rank == rank, (type(solver).__name__, solver.rank, rank)
        assert solver.full_rank == (rank == a.shape[0])
        weight, bias, realised = solver.solve(target)
        got = torch.cat([weight.T, bias[None]], dim=0)
        # float64 accuracy: the Gram route squares the condition number (≈ 1e-17·κ(AAᵀ) of the kept part)
        tol = 1e-12 if solver is SVDSolver else max(1e-12, 1e-15 * float(kept.max() / kept.min()))
        assert float((got - weight_ref).norm() / weight_ref.norm()) <= tol, type(solver).__name__
        assert float((realised - realised_ref).norm() / target.norm()) <= tol, type(solver).__name__


def test_issue_case_gram_no_longer_accepts_a_cholesky_the_rule_would_truncate():
    """rtol = 1e-4 on a 48-sample block whose Gram has eigenvalues down to 1e-8·λ_max: Cholesky
    succeeds, but the rule keeps only the directions with s > 1e-2 s_max."""
    a, s = features_with_spectrum(SPECTRA["48-samples-1e-4"](), 80, seed=3)
    assert int(torch.linalg.cholesky_ex(torch.cat([a, torch.ones(48, 1, dtype=F64)], 1) @
                                        torch.cat([a, torch.ones(48, 1, dtype=F64)], 1).T)[1]) == 0
    gram, svd = GramSolver(a, Truncation(1e-4, 0.0)), SVDSolver(a, Truncation(1e-4, 0.0))
    assert gram.rank == svd.rank == expected_rank(s, 1e-4, 0.0) < 48


@pytest.mark.parametrize("rtol", [1e-4, 1e-8, 1e-12])
def test_linear_solver_follows_the_rule(rtol):
    gen = torch.Generator().manual_seed(4)
    half, h, n = 6, 24, 10
    u, _ = torch.linalg.qr(torch.randn(n, half, dtype=F64, generator=gen))
    inputs = u @ torch.diag(torch.logspace(0, -5, half, dtype=F64))  # ill-conditioned inputs
    proj = torch.randn(h, half, dtype=F64, generator=gen)
    features = inputs @ proj.T
    s = torch.linalg.svdvals(torch.cat([features, torch.ones(n, 1, dtype=F64)], dim=1))
    target = torch.randn(n, half, dtype=F64, generator=gen)
    linear, svd = LinearSolver(inputs, proj, Truncation(rtol, 0.0)), SVDSolver(features, Truncation(rtol, 0.0))
    assert linear.rank == svd.rank == expected_rank(s, rtol, 0.0)
    weight_ref, realised_ref = reference(features, target, rtol, 0.0)
    weight, bias, realised = linear.solve(target)
    assert torch.allclose(torch.cat([weight.T, bias[None]]), weight_ref, rtol=1e-6, atol=1e-7 * float(weight_ref.abs().max()))
    assert torch.allclose(realised, realised_ref, atol=1e-8 * float(target.abs().max()))


def test_named_rules():
    exact, paper = Truncation.named("exact", 100), Truncation.named("paper", 100)
    assert exact == Truncation(100 * torch.finfo(F64).eps, 0.0)
    assert paper == Truncation(1e-4, 1e-10)  # s ≥ 1e-2 s_max and s ≥ 1e-5 on λ = s²
    assert Truncation.named("paper", 5, rtol=1e-3) == Truncation(1e-3, 1e-10)
    with pytest.raises(ValueError, match="truncation"):
        Truncation.named("loose", 5)
    with pytest.raises(ValueError, match="truncation"):
        ReversibleGN(RevMLP(4, 8, 1, 2, seed=0), lr=0.1, truncation="loose")


@pytest.mark.parametrize("scale", [1.0, 1e-4])
def test_paper_rule_counts_relative_and_absolute_cuts(scale):
    """With scale 1e-4 the absolute cut s ≥ 1e-5 binds before the relative one."""
    a, s = features_with_spectrum(SPECTRA["30-samples-1e-7"]() * scale, 60, seed=5)
    rule = Truncation.named("paper", 30)
    count = int(((s >= 1e-2 * s.max()) & (s >= 1e-5)).sum())  # the authors' rule, on singular values
    assert GramSolver(a, rule).rank == SVDSolver(a, rule).rank == count


@pytest.mark.parametrize("truncation", ["exact", "paper"])
def test_reversible_gn_gram_and_svd_agree_on_ill_conditioned_blocks(truncation):
    model = RevMLP(8, 12, 2, 3, first_linear=False, seed=6, dtype=F64)
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(4, 8, dtype=F64, generator=gen)
    x = base.repeat(3, 1) + 3e-3 * torch.randn(12, 8, dtype=F64, generator=gen)  # near-duplicate samples
    y = torch.randint(0, 3, (12,), generator=gen)
    updates, ranks = [], []
    for solver in ("gram", "svd"):
        m = RevMLP(8, 12, 2, 3, first_linear=False, seed=6, dtype=F64)
        before = flat_params(m)
        report = ReversibleGN(m, lr=0.1, solver=solver, truncation=truncation).step(x, y)
        updates.append(flat_params(m) - before)
        ranks.append(report.ranks)
    assert ranks[0] == ranks[1]
    assert float((updates[0] - updates[1]).norm() / updates[1].norm()) < 1e-6


@pytest.mark.parametrize("rtol,atol", [(1e-6, 0.0), (0.0, 1e-9), (1e-12, 0.0)])
def test_kernel_gn_follows_the_rule_on_a_known_ntk_spectrum(rtol, atol):
    """A bias-free linear model f = W x (O = 1): NTK = X Xᵀ, eigenvalues the squared singular values of X."""
    n, d = 12, 30
    gen = torch.Generator().manual_seed(8)
    u, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(d, n, dtype=F64, generator=gen))
    s = torch.logspace(0, -7.1, n, dtype=F64)
    x = u @ torch.diag(s) @ v.T
    model = nn.Linear(d, 1, bias=False, dtype=F64)
    y = torch.randn(n, 1, dtype=F64, generator=gen)
    jac = dense_jacobian(model, x)
    with torch.no_grad():
        eps = model(x) - y
    before = flat_params(model)
    with pytest.warns(Warning) if expected_rank(s, rtol, atol) < n else _no_warning():
        report = KernelGN(model, lr=0.5, loss="mse", rtol=rtol, atol=atol).step(x, y)
    assert report.ranks == (expected_rank(s, rtol, atol),)
    expected = -0.5 * torch.linalg.pinv(jac, rtol=math.sqrt(rtol), atol=math.sqrt(atol)) @ eps.reshape(-1)
    lam = s.square()
    kept = lam[lam > max(atol, rtol * float(lam.max()))]
    tol = max(1e-10, 1e-15 * float(kept.max() / kept.min()))  # the kernel route's float64 accuracy
    assert float((flat_params(model) - before - expected).norm() / expected.norm()) <= tol


class _no_warning:
    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
