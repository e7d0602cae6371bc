"""KernelGN in float32 keeps the rank float64 resolves, warns when truncated or inexact, and handles
BatchNorm statistics as a torch.optim loop would (issue 15, §5)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from dynamics.gauss_newton import GNStepWarning, KernelGN, gn_residual
from test_gauss_newton_reference import dense_jacobian, flat_params, reference_targets

F64 = torch.float64


def _digits(n, dtype=torch.float32):
    data = load_digits()
    x = torch.tensor(data.data[:n] / 16.0, dtype=dtype).reshape(n, 1, 8, 8)
    return x, torch.tensor(data.target[:n], dtype=torch.int64)


def _cnn(seed, norm=False):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 6, 3, padding=1)]
    if norm:
        layers.append(nn.BatchNorm2d(6))
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(6 * 64, 10)]
    return nn.Sequential(*layers)


def _captured_update(opt):
    captured = []
    original = opt.apply_update

    def capture(deltas):
        captured.extend(d.clone() for _, d in deltas)
        return original(deltas)
    opt.apply_update = capture
    return captured


@pytest.mark.parametrize("n,seed", [(20, 0), (30, 1)])
def test_float32_cnn_on_digits_keeps_full_rank_and_is_exact(n, seed):
    """Was (200 digits): rank 524 of 2000, ρ = 0.28 with a float32 NTK and solve; the float64 solve keeps N·O."""
    model = _cnn(seed)
    x, y = _digits(n)
    twin = copy.deepcopy(model).double()
    opt = KernelGN(model, lr=0.5)
    update = _captured_update(opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GNStepWarning)
        report = opt.step(x, y)
    assert report.ranks == (n * 10,) and report.full_rank == (True,)
    with torch.no_grad():
        desired = -0.5 * reference_targets(twin(x.double()), y, "ce")
    rho = gn_residual(twin, x.double(), [u.double() for u in update], desired)  # independent, float64
    assert rho <= 1e-4  # stated float32 tolerance: only δθ is rounded to float32
    assert report.residual == pytest.approx(rho, rel=1e-3, abs=1e-9)
    jac = dense_jacobian(twin, x.double())
    expected = torch.linalg.pinv(jac) @ desired.reshape(-1)  # −α J⁺ ε
    got = torch.cat([u.double().reshape(-1) for u in update])
    assert float((got - expected).norm() / expected.norm()) <= 1e-4


def test_truncated_step_warns_and_reports_the_rank_kept():
    model = _cnn(2)
    x, y = _digits(12)
    x, y = torch.cat([x, x[:3]]), torch.cat([y, y[:3]])  # duplicated samples: J has repeated rows
    with pytest.warns(GNStepWarning, match=r"kept rank 120 of 150"):
        report = KernelGN(model, lr=0.1).step(x, y)
    assert report.ranks == (120,) and report.full_rank == (False,)


@pytest.mark.parametrize("decades", [7.0, 8.0])
def test_inexact_float32_step_warns_with_rho(decades):
    """An ill-conditioned float32 linear model: rounding δθ to float32 misses the target by ≫ √eps32."""
    n, d = 10, 40
    gen = torch.Generator().manual_seed(3)
    u, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(d, n, dtype=F64, generator=gen))
    x = (u @ torch.diag(torch.logspace(0, -decades, n, dtype=F64)) @ v.T).float()
    model = nn.Linear(d, 1, bias=False)
    y = torch.randn(n, 1, generator=gen)
    with pytest.warns(GNStepWarning, match="missed its target") as record:
        report = KernelGN(model, lr=1.0, loss="mse", rtol=0.0).step(x, y)
    assert report.residual > 3.5e-4 and f"{report.residual:.2e}" in str(record[0].message)


def test_damped_steps_do_not_warn():
    model = _cnn(4)
    x, y = _digits(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GNStepWarning)
        KernelGN(model, lr=0.1, damping=1.0).step(x, y)


def _stats(model):
    bn = model[1]
    return bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_batchnorm_update_matches_one_train_mode_forward(dtype):
    model = _cnn(5, norm=True).to(dtype)
    x, y = _digits(16, dtype)
    reference = copy.deepcopy(model).train()
    with torch.no_grad():
        reference(x)  # what a torch.optim loop's forward does to the statistics
    KernelGN(model, lr=0.1).step(x, y)
    mean, var, count = _stats(model)
    ref_mean, ref_var, ref_count = _stats(reference)
    assert count == ref_count == 1
    assert torch.allclose(mean, ref_mean, rtol=1e-6, atol=1e-7) and torch.allclose(var, ref_var, rtol=1e-6)
    assert model.training and model[1].training  # flags restored


def test_batchnorm_update_step_linearises_the_model_with_the_updated_statistics():
    model = _cnn(6, norm=True).double()
    x, y = _digits(12, F64)
    twin = copy.deepcopy(model).train()
    with torch.no_grad():
        twin(x)
    twin.eval()
    jac = dense_jacobian(twin, x)
    with torch.no_grad():
        eps = reference_targets(twin(x), y, "ce")
    before = flat_params(model)
    KernelGN(model, lr=0.2).step(x, y)
    expected = -0.2 * torch.linalg.pinv(jac) @ eps.reshape(-1)
    assert float(((flat_params(model) - before) - expected).norm() / expected.norm()) <= 1e-9


@pytest.mark.parametrize("setup", ["freeze", "eval_model"])
def test_batchnorm_statistics_untouched_when_frozen_or_in_eval_mode(setup):
    model = _cnn(7, norm=True)
    if setup == "eval_model":
        model.eval()  # a torch.optim loop in eval mode would not update them either
    x, y = _digits(10)
    before = _stats(model)
    KernelGN(model, lr=0.1, batchnorm="freeze" if setup == "freeze" else "update").step(x, y)
    after = _stats(model)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1]) and before[2] == after[2]


def test_bad_batchnorm_choice_is_rejected():
    with pytest.raises(ValueError, match="batchnorm"):
        KernelGN(_cnn(0, norm=True), lr=0.1, batchnorm="sometimes")
