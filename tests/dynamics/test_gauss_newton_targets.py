"""output_targets and batch_loss against textbook gradients/Hessians and dense pseudo-inverses."""

from __future__ import annotations

import itertools

import pytest
import torch

from dynamics.gauss_newton import batch_loss, output_targets
from test_gauss_newton_reference import reference_targets


def _case(n, o, seed, dtype=torch.float64, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, o, dtype=dtype, generator=gen)
    return logits, torch.randint(0, o, (n,), generator=gen)


@pytest.mark.parametrize("n,o,seed", list(itertools.product([1, 5, 17], [2, 3, 10], [0, 1])))
def test_ce_exact_equals_dense_pseudo_inverse_of_softmax_hessian(n, o, seed):
    logits, y = _case(n, o, seed)
    got = output_targets(logits, y, "ce", ce_target="exact")
    p = torch.softmax(logits, dim=1)
    for i in range(n):
        hessian = torch.diag(p[i]) - torch.outer(p[i], p[i])
        g = p[i] - torch.nn.functional.one_hot(y[i], o).to(p.dtype)
        expected = torch.linalg.pinv(hessian, hermitian=True, rtol=1e-13) @ g
        assert torch.allclose(got[i], expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()))
    reference = reference_targets(logits, y, "ce", "exact")  # autograd Hessian, per-row relative error
    assert float(((got - reference).abs().amax(1) / reference.abs().amax(1)).max()) < 1e-9


@pytest.mark.parametrize("n,o,seed", list(itertools.product([1, 6], [2, 4], [0, 3])))
def test_ce_identity_and_mse_equal_textbook_targets(n, o, seed):
    logits, y = _case(n, o, seed)
    assert torch.allclose(output_targets(logits, y, "ce"), reference_targets(logits, y, "ce"), atol=1e-14)
    y_float = torch.randn(n, o, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 7))
    assert torch.allclose(output_targets(logits, y_float, "mse"), reference_targets(logits, y_float, "mse"), atol=1e-12)
    assert torch.allclose(output_targets(logits, y, "mse"), reference_targets(logits, y, "mse"), atol=1e-12)


def test_ce_exact_is_stable_for_tiny_probabilities():
    logits = torch.tensor([[0.0, -80.0, 30.0]], dtype=torch.float64)
    got = output_targets(logits, torch.tensor([1]), "ce", ce_target="exact")
    inv_p = 1 + torch.exp(torch.tensor(80.0, dtype=torch.float64)) + torch.exp(torch.tensor(110.0, dtype=torch.float64))
    expected = inv_p * torch.tensor([1 / 3, 1 / 3 - 1, 1 / 3], dtype=torch.float64)
    assert torch.isfinite(got).all()
    assert torch.allclose(got[0], expected, rtol=1e-12)
    # float32: 1/p_y = e^40 ≈ 2.4e17 stays finite where softmax would underflow p_y to 0
    got32 = output_targets(torch.tensor([[0.0, -40.0]]), torch.tensor([1]), "ce", ce_target="exact")
    assert torch.isfinite(got32).all() and torch.allclose(got32[0, 1].double(), -0.5 * (1 + torch.exp(torch.tensor(40.0, dtype=torch.float64))), rtol=1e-5)


def test_float32_targets_match_float64_within_float32_tolerance():
    logits, y = _case(50, 10, 4)
    for ce_target in ("identity", "exact"):
        got = output_targets(logits.float(), y, "ce", ce_target=ce_target).double()
        ref = output_targets(logits, y, "ce", ce_target=ce_target)
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_loss_conventions():
    logits, y = _case(7, 4, 5)
    p = torch.softmax(logits, dim=1)
    assert float(batch_loss(logits, y, "ce")) == pytest.approx(float(-torch.log(p[torch.arange(7), y]).mean()), rel=1e-12)
    target = torch.randn(7, 4, dtype=torch.float64)
    expected = sum(float(((logits[i] - target[i]) ** 2).sum()) for i in range(7)) / 7
    assert float(batch_loss(logits, target, "mse")) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("y,loss,error,match", [
    (torch.tensor([0, 3]), "ce", ValueError, "label 3"),
    (torch.tensor([-1, 0]), "ce", ValueError, "label -1"),
    (torch.tensor([0.0, 1.0]), "ce", TypeError, "int64"),
    (torch.tensor([0, 1], dtype=torch.int32), "ce", TypeError, "int32"),
    (torch.tensor([0, 1, 2]), "ce", ValueError, r"shape \(2,\)"),
    (torch.tensor([[0.0, float("nan"), 0.0], [0.0, 0.0, 0.0]]), "mse", ValueError, "non-finite"),
    (torch.zeros(2, 4), "mse", ValueError, r"\(2, 3\)"),
    (torch.tensor([0, 1]), "hinge", ValueError, "hinge"),
])
def test_bad_targets_raise_naming_the_value(y, loss, error, match):
    with pytest.raises(error, match=match):
        output_targets(torch.zeros(2, 3), y, loss)


def test_bad_ce_target_raises():
    with pytest.raises(ValueError, match="'newton'"):
        output_targets(torch.zeros(2, 3), torch.tensor([0, 1]), "ce", ce_target="newton")
