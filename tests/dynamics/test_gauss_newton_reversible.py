"""ReversibleGN against a dense jacrev Jacobian: ρ of "exact", depth × target of "sum", solver agreement."""

from __future__ import annotations

import copy
import itertools
import random

import pytest
import torch

from dynamics.gauss_newton import ReversibleGN, gn_residual
from dynamics.gauss_newton.tangents import forward_states, pull_back, push_forward
from dynamics.models import RevMLP
from test_gauss_newton_reference import dense_jacobian, dense_residual, flat_params, reference_targets

F64 = torch.float64


def _batch(model, n, loss, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, model.dim, dtype=model.readout.dtype, generator=gen)
    y = torch.randint(0, model.n_classes, (n,), generator=gen)
    if loss == "mse" and seed % 2:
        y = torch.randn(n, model.n_classes, dtype=model.readout.dtype, generator=gen)
    return x, y


def _step(model, x, y, **kwargs):
    """(report, δθ flat, dense J at the start, desired −αε from the textbook reference)."""
    jac = dense_jacobian(model, x)
    before = flat_params(model)
    with torch.no_grad():
        logits = model(x)
    opt = ReversibleGN(model, **kwargs)
    report = opt.step(x, y)
    desired = -kwargs["lr"] * reference_targets(logits, y, kwargs.get("loss", "ce"), kwargs.get("ce_target", "identity"))
    return report, flat_params(model) - before, jac, desired


# seeded grid over (d, H, depth, N, O, first_linear, loss); realisable = some block has full-rank features
_FULL = list(itertools.product([4, 8], [12, 40], [1, 2, 3], [3, 9], [2, 3], [True, False], ["ce", "mse"]))
GRID = random.Random(0).sample(_FULL, 28)


def _realisable(d, h, depth, n, first_linear):
    nonlinear_ok = n <= h + 1 and (depth > 1 or not first_linear)
    return nonlinear_ok or n <= d // 2 + 1


@pytest.mark.parametrize("d,h,depth,n,o,first_linear,loss", GRID)
def test_exact_combine_realises_the_target_against_dense_jacobian(d, h, depth, n, o, first_linear, loss):
    model = RevMLP(d, h, depth, o, first_linear=first_linear, seed=d + h + depth, dtype=F64)
    x, y = _batch(model, n, loss, seed=n + o)
    report, update, jac, desired = _step(model, x, y, lr=0.3, loss=loss)
    rho = dense_residual(jac, update, desired)
    assert report.residual == pytest.approx(rho, abs=1e-11)
    if _realisable(d, h, depth, n, first_linear):
        assert rho <= 1e-10
    assert report.update_norm == pytest.approx(float(update.norm()), rel=1e-12)
    assert len(report.full_rank) == depth and report.loss > 0 and report.time_s > 0


@pytest.mark.parametrize("d,h,depth,n,o,first_linear,loss", [g for g in GRID if g[3] <= min(g[0] // 2 + 1, g[1] + 1)])
def test_sum_with_all_blocks_full_rank_moves_output_by_depth_times_target(d, h, depth, n, o, first_linear, loss):
    model = RevMLP(d, h, depth, o, first_linear=first_linear, seed=1, dtype=F64)
    x, y = _batch(model, n, loss, seed=2)
    report, update, jac, desired = _step(model, x, y, lr=0.7, loss=loss, combine="sum")
    assert all(report.full_rank)
    assert dense_residual(jac, update, depth * desired) <= 1e-10
    assert report.residual == pytest.approx(depth - 1, abs=1e-9)


@pytest.mark.parametrize("ce_target", ["identity", "exact"])
def test_published_failure_case_linear_first_block_with_large_batch(ce_target):
    # N = 12 > d/2 + 1 = 5: block 0 (linear) cannot realise the target; the others can
    model = RevMLP(8, 48, 3, 4, first_linear=True, seed=3, dtype=F64)
    x, y = _batch(model, 12, "ce", seed=4)
    exact, update, jac, desired = _step(copy.deepcopy(model), x, y, lr=0.5, ce_target=ce_target)
    assert exact.full_rank == (False, True, True) and exact.ranks[:2] == (5, 5)
    assert dense_residual(jac, update, desired) <= 1e-10
    published, update, jac, desired = _step(copy.deepcopy(model), x, y, lr=0.5, ce_target=ce_target, combine="sum")
    rho = dense_residual(jac, update, desired)
    assert published.residual == pytest.approx(rho, rel=1e-9)
    # the sum is not a multiple of the target: no scalar c makes J δθ = c·(−αε)
    moved = jac @ update
    best = float(moved @ desired.reshape(-1)) / float(desired.square().sum())
    assert float((moved - best * desired.reshape(-1)).norm() / moved.norm()) > 0.01


def test_rank_deficient_block_above_full_rank_blocks():
    model = RevMLP(6, 30, 3, 3, first_linear=False, seed=5, dtype=F64)
    with torch.no_grad():
        model.blocks[2].F.proj.zero_()  # relu(0) = 0: block 2's F features have rank 1 (bias only)
    x, y = _batch(model, 8, "mse", seed=1)
    report, update, jac, desired = _step(model, x, y, lr=1.0, loss="mse")
    assert report.full_rank == (True, True, False)
    rho = dense_residual(jac, update, desired)
    assert rho <= 1e-10 and report.residual == pytest.approx(rho, abs=1e-11)


@pytest.mark.parametrize("zeroed,n,seed", [((2,), 8, 0), ((1, 3), 9, 1), ((2,), 12, 2)])
def test_reported_residual_is_the_dense_one_with_deficient_blocks_between_full_ones(zeroed, n, seed):
    """Linear deficient block 0, nonlinear blocks made deficient in between: the report's ρ (which reuses
    the deficient blocks' push-forward) equals ρ from a dense Jacobian, and both are round-off."""
    model = RevMLP(6, 30, 4, 3, first_linear=True, seed=7 + seed, dtype=F64)
    with torch.no_grad():
        for b in zeroed:
            model.blocks[b].G.proj.zero_()  # relu(0) = 0: G's features have rank 1 (bias only)
    x, y = _batch(model, n, "ce", seed=seed)
    report, update, jac, desired = _step(model, x, y, lr=0.7)
    assert report.full_rank == tuple(b != 0 and b not in zeroed for b in range(4))
    rho = dense_residual(jac, update, desired)
    assert rho <= 1e-10 and report.residual == pytest.approx(rho, abs=1e-11)


def test_no_block_full_rank_gives_least_squares_of_the_lowest_block():
    # depth 1, linear block, N > d/2 + 1: nothing realises the target; exact == sum (one block)
    model = RevMLP(6, 20, 1, 3, first_linear=True, seed=2, dtype=F64)
    x, y = _batch(model, 10, "ce", seed=3)
    a, ua, jac, desired = _step(copy.deepcopy(model), x, y, lr=0.4)
    b, ub, _, _ = _step(copy.deepcopy(model), x, y, lr=0.4, combine="sum")
    assert torch.allclose(ua, ub, rtol=1e-12, atol=1e-14)
    assert a.residual == pytest.approx(dense_residual(jac, ua, desired), rel=1e-9) and 0.01 < a.residual < 1


@pytest.mark.parametrize("first_linear,n,combine", [(True, 4, "exact"), (True, 11, "exact"), (False, 9, "sum")])
def test_gram_and_svd_solvers_give_the_same_update(first_linear, n, combine):
    model = RevMLP(8, 24, 2, 3, first_linear=first_linear, seed=7, dtype=F64)
    x, y = _batch(model, n, "ce", seed=8)
    _, gram, _, _ = _step(copy.deepcopy(model), x, y, lr=0.5, combine=combine)
    _, svd, _, _ = _step(copy.deepcopy(model), x, y, lr=0.5, combine=combine, solver="svd")
    assert torch.allclose(gram, svd, rtol=1e-9, atol=1e-11 * float(svd.abs().max()))


def test_report_residual_matches_gn_residual_and_scales_linearly_with_lr():
    model = RevMLP(8, 32, 2, 4, seed=9, dtype=F64)
    x, y = _batch(model, 4, "ce", seed=10)  # N ≤ d/2 + 1: every block full rank
    with torch.no_grad():
        logits = model(x)
    updates = []
    for lr in (0.1, 0.2):
        trial = copy.deepcopy(model)
        before = {n: p.detach().clone() for n, p in trial.named_parameters()}
        ReversibleGN(trial, lr=lr, combine="sum").step(x, y)
        updates.append({n: p.detach() - before[n] for n, p in trial.named_parameters()})
    desired = -0.1 * reference_targets(logits, y, "ce")
    assert gn_residual(model, x, updates[0], 2 * desired) <= 1e-10  # depth 2, sum: output moves 2·target
    for name in updates[0]:
        assert torch.allclose(updates[1][name], 2 * updates[0][name], rtol=1e-10, atol=1e-14)


def test_stored_state_tangents_match_jacrev_of_blocks_and_their_inverse():
    model = RevMLP(6, 16, 3, 3, first_linear=True, activation="gelu", seed=11, dtype=F64)
    x, _ = _batch(model, 5, "ce", seed=12)
    states, logits = forward_states(model, x)
    assert torch.allclose(logits, model(x), rtol=1e-14, atol=1e-14)
    top = torch.randn(5, 6, dtype=F64, generator=torch.Generator().manual_seed(0))
    pulled = pull_back(states, top)
    z = x
    outputs = []
    for block in model.blocks:
        z = block(z)
        outputs.append(z)
    for b in range(2):  # J of blocks b+1.. applied to pulled[b] gives back top
        def downstream(u, b=b):
            for block in model.blocks[b + 1:]:
                u = block(u)
            return u
        _, moved = torch.func.jvp(downstream, (outputs[b],), (pulled[b],))
        assert torch.allclose(moved, top, rtol=1e-10, atol=1e-12)
    pushed = push_forward(states, {0: pulled[0]})
    assert torch.allclose(pushed[-1], top, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("first_linear,n", [(True, 4), (True, 30), (False, 30)])
def test_float32_exact_step_realises_target_within_float32_tolerance(first_linear, n):
    model = RevMLP(16, 64, 3, 5, first_linear=first_linear, seed=13)
    x, y = _batch(model, n, "ce", seed=14)
    twin = copy.deepcopy(model).double()
    report = ReversibleGN(model, lr=0.5).step(x, y)
    update = flat_params(model).double() - flat_params(twin)
    with torch.no_grad():
        desired = -0.5 * reference_targets(twin(x.double()), y, "ce")
    rho = dense_residual(dense_jacobian(twin, x.double()), update, desired)
    assert rho <= 2e-3 and report.residual <= 2e-3  # stated float32 tolerance


@pytest.mark.parametrize("d,h,n", [(6, 16, 5), (16, 4, 3), (10, 5, 6), (8, 40, 9)])
def test_linear_coupling_state_matches_module_and_jacrev(d, h, n):
    """A linear coupling with half ≤ H keeps M = W C (forward and tangents through it, features formed on
    demand); with half > H it keeps the features. Both against the module and jacrev, and the whole step
    against a dense Jacobian."""
    model = RevMLP(d, h, 2, 3, first_linear=True, seed=d * h, dtype=F64)
    x, y = _batch(model, n, "ce", seed=n)
    states, logits = forward_states(model, x)
    assert torch.allclose(logits, model(x), rtol=1e-13, atol=1e-13)
    block = model.blocks[0]
    x1, x2 = x.chunk(2, dim=-1)
    y1 = x1 + block.F(x2)
    du = torch.randn(n, d // 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    for state, coupling, u in ((states[0].F, block.F, x2), (states[0].G, block.G, y1)):
        assert (state.product is None) == (d // 2 > h)
        assert torch.allclose(state.inputs, u, rtol=1e-14, atol=1e-14)
        assert torch.allclose(state.features, u @ coupling.proj.T, rtol=1e-13, atol=1e-13)
        _, reference = torch.func.jvp(coupling, (u,), (du,))
        assert torch.allclose(state.jvp(du), reference, rtol=1e-12, atol=1e-13)
    report, update, jac, desired = _step(model, x, y, lr=0.2)
    rho = dense_residual(jac, update, desired)
    assert report.residual == pytest.approx(rho, abs=1e-11)
    if _realisable(d, h, 2, n, True):
        assert rho <= 1e-10
