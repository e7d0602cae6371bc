"""Brute-force references for the Gauss–Newton tests (dense Jacobians, textbook targets) and their own checks.

Other test_gauss_newton_* files import these helpers; they never call the code under test.
"""

from __future__ import annotations

import pytest
import torch

from dynamics.models import MLP, RevMLP


def trained(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def dense_jacobian(model, x):
    """J (N·O, P): jacrev of the flattened outputs w.r.t. all trained parameters in parameters order."""
    names, params = zip(*trained(model))

    def outputs(*values):
        return torch.func.functional_call(model, dict(zip(names, values)), (x,)).reshape(-1)

    blocks = torch.func.jacrev(outputs, argnums=tuple(range(len(params))))(*(p.detach() for p in params))
    return torch.cat([j.reshape(j.shape[0], -1) for j in blocks], dim=1)


def flat_params(model):
    return torch.cat([p.detach().reshape(-1) for _, p in trained(model)]).clone()


def reference_targets(logits, y, loss, ce_target="identity"):
    """ε = pinv(H) g per sample from autograd's gradient and Hessian of ℓ (textbook; identity: H = I)."""
    rows = []
    for f, label in zip(logits, y):
        if loss == "ce":
            def ell(v, label=label):
                return -torch.log_softmax(v, dim=0)[label]
        else:
            target = label if label.dim() else torch.nn.functional.one_hot(label, logits.shape[1]).to(logits.dtype)

            def ell(v, target=target):
                return (v - target).square().sum()
        g = torch.func.grad(ell)(f)
        h = torch.func.hessian(ell)(f)
        rows.append(g if (loss == "ce" and ce_target == "identity") else torch.linalg.pinv(h, hermitian=True, rtol=1e-13) @ g)
    return torch.stack(rows)


def dense_residual(jac, update, desired):
    """‖J δθ − desired‖ / ‖desired‖ with dense J."""
    return float(torch.linalg.vector_norm(jac @ update - desired.reshape(-1)) / torch.linalg.vector_norm(desired))


@pytest.mark.parametrize("model", [RevMLP(6, 10, 2, 3, seed=1, dtype=torch.float64),
                                   MLP(5, 7, 2, 3, activation="tanh", seed=2, dtype=torch.float64)])
def test_dense_jacobian_matches_central_differences(model):
    x = torch.randn(4, model.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    jac = dense_jacobian(model, x)
    theta = flat_params(model)
    direction = torch.randn(theta.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    step = 1e-6

    def outputs_at(vector):
        params, offset = {}, 0
        for name, p in trained(model):
            params[name] = vector[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        return torch.func.functional_call(model, params, (x,)).reshape(-1)

    finite = (outputs_at(theta + step * direction) - outputs_at(theta - step * direction)) / (2 * step)
    assert torch.allclose(jac @ direction, finite, rtol=1e-7, atol=1e-8)


def test_reference_targets_textbook_values():
    logits = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)
    p = torch.softmax(logits, dim=1)[0]
    assert torch.allclose(reference_targets(logits, torch.tensor([1]), "ce")[0], p - torch.tensor([0.0, 1, 0]))
    expected = (1 / p[1]) * (torch.full((3,), 1 / 3, dtype=torch.float64) - torch.tensor([0.0, 1, 0]))
    assert torch.allclose(reference_targets(logits, torch.tensor([1]), "ce", "exact")[0], expected, rtol=1e-10)
    y = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64)
    assert torch.allclose(reference_targets(logits, y, "mse")[0], logits[0] - y[0])


def output_hessians(logits, y, loss, ce_target="identity"):
    """(g (N, O), H (N, O, O)) of ℓ per sample by autograd; the identity CE variant uses H = I, g = p − e_y."""
    gs, hs = [], []
    for f, label in zip(logits, y):
        if loss == "ce":
            def ell(v, label=label):
                return -torch.log_softmax(v, dim=0)[label]
        else:
            target = label if label.dim() else torch.nn.functional.one_hot(label, logits.shape[1]).to(logits.dtype)

            def ell(v, target=target):
                return (v - target).square().sum()
        gs.append(torch.func.grad(ell)(f))
        hs.append(torch.eye(len(f), dtype=f.dtype) if (loss == "ce" and ce_target == "identity")
                  else torch.func.hessian(ell)(f))
    return torch.stack(gs), torch.stack(hs)


def dense_gn_step(jac, logits, y, loss, ce_target, lr, rtol=1e-10):
    """−α (JᵀHJ)⁺ Jᵀ g with dense J (N·O, P), block-diagonal H from autograd and an explicit pinv."""
    g, h = output_hessians(logits, y, loss, ce_target)
    big_h = torch.block_diag(*h)
    ggn = jac.T @ big_h @ jac
    return -lr * torch.linalg.pinv(ggn, hermitian=True, rtol=rtol) @ (jac.T @ g.reshape(-1))
