"""Lanczos top eigenvalues against eigvalsh of dense matrices: torch.func.hessian of the flat loss, JᵀHJ/N."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

from dynamics.curvature import DENSE_LIMIT, top_eigenvalues
from dynamics.models import MLP, RevMLP

F64 = torch.float64


def _data(dim, n, classes, seed, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, dtype=dtype, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def dense_matrices(model, x, y, loss):
    """(Hessian, GGN) of the batch loss w.r.t. the trained parameters, dense, in float64, eval mode."""
    model = copy.deepcopy(model).double().eval()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
    theta = torch.cat([model.get_parameter(n).detach().reshape(-1) for n in names])
    x = x.double()

    def unflat(v):
        out, i = {}, 0
        for name, shape in zip(names, shapes):
            out[name] = v[i:i + shape.numel()].reshape(shape)
            i += shape.numel()
        return out

    def outputs(v):
        return functional_call(model, unflat(v), (x,))

    def batch_loss(v):
        f = outputs(v)
        if loss == "ce":
            return nn.functional.cross_entropy(f, y)
        target = nn.functional.one_hot(y, f.shape[1]).double() if y.dtype == torch.int64 else y.double()
        return (f - target).square().sum(1).mean()

    h = hessian(batch_loss)(theta)
    jac = jacrev(outputs)(theta)                                # (N, O, P)
    f = outputs(theta).detach()
    if loss == "ce":
        p = torch.softmax(f, 1)
        out_h = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    else:
        out_h = 2 * torch.eye(f.shape[1], dtype=F64).expand(f.shape[0], -1, -1)
    ggn = torch.einsum("nop,noq,nqr->pr", jac, out_h, jac) / f.shape[0]
    return h, ggn


def _trained(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():   # away from the initialisation (a zero-init bias makes degenerate spectra)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


CASES = [  # (model, input dim, batch, loss, matrix, dtype, rtol)
    (lambda dt: MLP(5, 6, 2, 3, activation="tanh", seed=1, dtype=dt), 5, 12, "ce", "hessian", F64, 1e-7),
    (lambda dt: MLP(5, 6, 2, 3, activation="tanh", seed=1, dtype=dt), 5, 12, "ce", "ggn", F64, 1e-7),
    (lambda dt: MLP(4, 7, 1, 3, activation="gelu", seed=2, dtype=dt), 4, 9, "mse", "hessian", F64, 1e-7),
    (lambda dt: MLP(4, 7, 1, 3, activation="gelu", seed=2, dtype=dt), 4, 9, "mse", "ggn", torch.float32, 2e-3),
    (lambda dt: RevMLP(6, 9, 2, 3, seed=3, dtype=dt), 6, 10, "ce", "hessian", torch.float32, 2e-3),
    (lambda dt: RevMLP(6, 9, 2, 3, seed=3, dtype=dt), 6, 10, "ce", "ggn", F64, 1e-7),
]


@pytest.mark.parametrize("make, dim, n, loss, matrix, dtype, rtol", CASES)
def test_top_eigenvalues_equal_dense_eigvalsh(make, dim, n, loss, matrix, dtype, rtol):
    model = _trained(make(dtype), seed=n)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > DENSE_LIMIT   # the Lanczos path
    x, y = _data(dim, n, 3, seed=dim, dtype=dtype)
    h, ggn = dense_matrices(model, x, y, loss)
    expected = torch.linalg.eigvalsh(h if matrix == "hessian" else ggn).flip(0)[:3]
    got = top_eigenvalues(model, x, y, loss=loss, matrix=matrix, k=3)
    assert got.dtype == F64 and got.shape == (3,)
    assert torch.all(got[:-1] >= got[1:])
    assert torch.allclose(got, expected, rtol=rtol, atol=rtol * float(expected.abs().max()))
    again = top_eigenvalues(model, x, y, loss=loss, matrix=matrix, k=3)
    assert torch.equal(got, again)   # seeded start vector: same call, same numbers


def test_mse_float_targets_and_preconditioned_spectrum():
    model = _trained(MLP(4, 6, 1, 2, activation="tanh", seed=4, dtype=F64), seed=5)
    x, _ = _data(4, 7, 2, seed=6)
    y = torch.randn(7, 2, dtype=F64, generator=torch.Generator().manual_seed(7))
    h, _ = dense_matrices(model, x, y, "mse")
    d = torch.rand(h.shape[0], dtype=F64, generator=torch.Generator().manual_seed(8)) + 0.1
    expected = torch.linalg.eigvalsh(torch.diag(d.rsqrt()) @ h @ torch.diag(d.rsqrt())).flip(0)[:2]
    names = [n for n, _ in model.named_parameters()]
    pieces = dict(zip(names, d.split([p.numel() for p in model.parameters()])))
    by_name = {n: pieces[n].reshape(model.get_parameter(n).shape) for n in names}
    for preconditioner in (d, by_name):
        got = top_eigenvalues(model, x, y, loss="mse", k=2, preconditioner=preconditioner)
        assert torch.allclose(got, expected, rtol=1e-7)


def test_eval_mode_and_flags_restored_and_small_models_solved_densely():
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 2)).double().train()
    x, y = _data(3, 6, 2, seed=9)
    h, ggn = dense_matrices(model, x, y, "ce")   # eval mode: dropout is the identity
    assert sum(p.numel() for p in model.parameters()) > DENSE_LIMIT
    got = top_eigenvalues(model, x, y, k=2)
    assert torch.allclose(got, torch.linalg.eigvalsh(h).flip(0)[:2], rtol=1e-7)
    assert model.training and model[2].training
    tiny = nn.Linear(3, 2, dtype=F64)   # 8 parameters ≤ DENSE_LIMIT: every eigenvalue, k = P allowed
    h, _ = dense_matrices(tiny, x, y, "ce")
    assert torch.allclose(top_eigenvalues(tiny, x, y, k=8), torch.linalg.eigvalsh(h).flip(0), atol=1e-12)
    assert torch.allclose(top_eigenvalues(tiny, x, y), torch.linalg.eigvalsh(h)[-1:], atol=1e-12)


def test_bad_arguments_raise_naming_them():
    model = MLP(4, 6, 1, 3, seed=10, dtype=F64)
    x, y = _data(4, 5, 3, seed=11)
    size = sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match=r"k must be an int in \[1, "):
        top_eigenvalues(model, x, y, k=size)
    with pytest.raises(ValueError, match="k must be"):
        top_eigenvalues(model, x, y, k=0)
    with pytest.raises(ValueError, match="matrix must be one of"):
        top_eigenvalues(model, x, y, matrix="fisher")
    with pytest.raises(ValueError, match="loss must be one of"):
        top_eigenvalues(model, x, y, loss="hinge")
    with pytest.raises(TypeError, match="int64 class labels"):
        top_eigenvalues(model, x, y.double())
    with pytest.raises(ValueError, match="finite and > 0"):
        top_eigenvalues(model, x, y, preconditioner=-torch.ones(size, dtype=F64))
    with pytest.raises(ValueError, match="entries"):
        top_eigenvalues(model, x, y, preconditioner=torch.ones(size - 1, dtype=F64))
    with pytest.raises(ValueError, match="lacks the trained parameters"):
        top_eigenvalues(model, x, y, preconditioner={})
    with pytest.raises(TypeError, match="torch.nn.Module"):
        top_eigenvalues(lambda v: v, x, y)
    with pytest.raises(ValueError, match="tol"):
        top_eigenvalues(model, x, y, tol=float("nan"))
