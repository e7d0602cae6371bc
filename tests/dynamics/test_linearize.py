"""The linearised twin against a dense-Jacobian linear model (torch.func.jacrev at θ₀, explicit products)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from dynamics.gauss_newton import KernelGN, ReversibleGN
from dynamics.linearize import LinearizedModel, TwinGN, linearized, relative_distance
from dynamics.models import MLP, RevMLP

F64 = torch.float64


def _data(dim, n, classes, seed, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, dtype=dtype, generator=gen), torch.randint(0, classes, (n,), generator=gen)


class DenseLinear:
    """f0(x) + J(x; θ₀)·(θ − θ₀) with J formed densely (jacrev), θ a flat float64 vector."""

    def __init__(self, model: nn.Module):
        self.model = copy.deepcopy(model).double().eval()
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
        self.theta0 = torch.cat([p.detach().reshape(-1) for n, p in self.model.named_parameters()
                                 if n in self.names])
        self.theta = self.theta0.clone()

    def unflat(self, v):
        out, i = {}, 0
        for name, shape in zip(self.names, self.shapes):
            out[name] = v[i:i + shape.numel()].reshape(shape)
            i += shape.numel()
        return out

    def __call__(self, x, theta=None):
        x = x.double()
        theta = self.theta if theta is None else theta
        jac = jacrev(lambda v: functional_call(self.model, self.unflat(v), (x,)))(self.theta0)   # (N, O, P)
        with torch.no_grad():
            f0 = self.model(x)
        return f0 + torch.einsum("nop,p->no", jac, theta - self.theta0)

    def sgd_step(self, x, y, lr):
        theta = self.theta.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(self(x, theta), y)
        (grad,) = torch.autograd.grad(loss, theta)
        self.theta = (self.theta - lr * grad).detach()


def _flat(model):
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters() if p.requires_grad])


MODELS = [
    lambda dtype: MLP(5, 7, 2, 3, activation="tanh", seed=1, dtype=dtype),
    lambda dtype: RevMLP(6, 10, 2, 3, seed=2, dtype=dtype),
    lambda dtype: nn.Sequential(nn.Linear(5, 6), nn.GELU(), nn.Dropout(0.5), nn.Linear(6, 3)).to(dtype),
]


@pytest.mark.parametrize("make", MODELS)
@pytest.mark.parametrize("dtype, tol", [(F64, 1e-10), (torch.float32, 2e-5)])
def test_forward_equals_dense_taylor_model(make, dtype, tol):
    torch.manual_seed(0)
    model = make(dtype).train()
    dim = 6 if isinstance(model, RevMLP) else 5
    x, _ = _data(dim, 9, 3, seed=3, dtype=dtype)
    lin = linearized(model)
    dense = DenseLinear(model)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():   # move θ away from θ₀
        for p in lin.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    dense.theta = _flat(lin)
    expected = dense(x)
    got = lin(x)
    assert got.dtype == dtype
    assert torch.allclose(got.double(), expected, rtol=tol, atol=tol * float(expected.abs().max()))
    with torch.no_grad():
        assert torch.equal(lin(x), got)   # eval-mode linearisation point: dropout never draws


def test_names_state_and_model_untouched():
    model = RevMLP(6, 10, 2, 3, seed=5, dtype=F64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lin = linearized(model)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert [n for n, _ in lin.named_parameters()] == trained == list(lin.parameter_names)
    assert list(lin.state_dict()) == trained
    for name, p in lin.named_parameters():
        assert torch.equal(p, model.get_parameter(name)) and p is not model.get_parameter(name)
        assert torch.equal(lin.initial_parameters()[name], p)
    with torch.no_grad():
        for p in lin.parameters():
            p.add_(1.0)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    lin32 = copy.deepcopy(lin).float()   # .float() moves θ and θ₀; deepcopy keeps the frozen copy
    assert all(p.dtype == torch.float32 for p in lin32.parameters())
    assert all(p.dtype == torch.float32 for p in lin32.initial_parameters().values())
    x, _ = _data(6, 4, 3, seed=6)
    assert torch.allclose(lin32(x.float()).double(), lin(x), rtol=1e-4, atol=1e-4)


def test_wrapped_model_keeps_canonical_names():
    inner = MLP(4, 5, 1, 2, seed=7, dtype=F64)
    lin = linearized(nn.DataParallel(inner))
    assert [n for n, _ in lin.named_parameters()] == [n for n, _ in inner.named_parameters()]


class RandomFeatures(nn.Module):
    """f(x) = W tanh(C x) + b with a fixed buffer C: linear in its trained parameters (W, b)."""

    def __init__(self, dim, width, classes, seed):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(width, dim, generator=gen, dtype=F64))
        self.out = nn.Linear(width, classes, dtype=F64)

    def forward(self, x):
        return self.out(torch.tanh(x @ self.proj.T))


@pytest.mark.parametrize("make_optimizer", [
    lambda m: torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9),
    lambda m: torch.optim.Adam(m.parameters(), lr=0.05),
    lambda m: KernelGN(m, lr=0.7),
])
@pytest.mark.parametrize("make_model", [lambda: RandomFeatures(4, 12, 3, seed=8),
                                        lambda: nn.Linear(4, 3, dtype=F64)])
def test_distance_is_zero_for_a_model_linear_in_its_parameters(make_model, make_optimizer):
    torch.manual_seed(9)
    model = make_model()
    lin = linearized(model)
    x_test, _ = _data(4, 50, 3, seed=10)
    with torch.no_grad():
        f0 = model(x_test)
    opt_model, opt_lin = make_optimizer(model), make_optimizer(lin)
    for step in range(15):
        x, y = _data(4, 4, 3, seed=100 + step)   # N·O = 12 ≤ P: KernelGN's kernel is nonsingular
        for net, opt in ((model, opt_model), (lin, opt_lin)):
            if isinstance(opt, KernelGN):
                opt.step(x, y)
            else:
                opt.zero_grad()
                nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
    with torch.no_grad():
        f, f_lin = model(x_test), lin(x_test)
    assert float((f - f0).norm()) > 0.1   # it moved
    assert relative_distance(f, f_lin, f0) < 1e-12
    assert torch.allclose(_flat(model), _flat(lin), rtol=0, atol=1e-12)


def _train_pair(model, lr, steps, dense=None):
    """Model and twin trained side by side with plain SGD on the same seeded batches (and the dense
    reference linear model, when given, by its explicit gradient)."""
    lin = linearized(model)
    opts = [torch.optim.SGD(net.parameters(), lr=lr) for net in (model, lin)]
    for step in range(steps):
        x, y = _data(5, 10, 3, seed=200 + step)
        for net, opt in zip((model, lin), opts):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        if dense is not None:
            dense.sgd_step(x, y, lr)
    return lin


def test_sgd_twin_equals_dense_linear_model_and_distance_is_first_order_in_lr():
    x_test, _ = _data(5, 40, 3, seed=11)
    distances = []
    for lr in (0.02, 0.002):
        model = MLP(5, 16, 2, 3, activation="tanh", seed=12, dtype=F64)
        with torch.no_grad():
            f0 = model(x_test)
        dense = DenseLinear(model)
        lin = _train_pair(model, lr, steps=12, dense=dense)
        assert torch.allclose(_flat(lin), dense.theta, rtol=0, atol=1e-13)   # the twin IS the dense linear model
        with torch.no_grad():
            f, f_lin = model(x_test), lin(x_test)
        assert torch.allclose(f_lin, dense(x_test), rtol=0, atol=1e-12)
        distances.append(relative_distance(f, f_lin, f0))
    ratio = distances[1] / distances[0]
    assert 0.08 < ratio < 0.12, distances   # ‖f − f_lin‖ = O(lr²t²), ‖f − f₀‖ = O(lr·t): ratio O(lr)


def test_reversible_gn_twin_first_step_equals_the_model_step_and_distance_is_first_order():
    x_test, _ = _data(6, 40, 3, seed=13)
    distances = []
    for lr in (0.002, 0.0002):   # the asymptotic range (at 0.05 a step is not yet small)
        model = RevMLP(6, 12, 2, 3, seed=14, dtype=F64)
        with torch.no_grad():
            f0 = model(x_test)
        lin = linearized(model)
        solver = ReversibleGN(model, lr=lr)
        twin = TwinGN(lin, lambda anchor, lr=lr: ReversibleGN(anchor, lr=lr))
        for step in range(8):
            x, y = _data(6, 5, 3, seed=300 + step)
            model_report, twin_report = solver.step(x, y), twin.step(x, y)
            assert twin_report.residual < 1e-9
            if step == 0:   # at θ₀ the linear model and the model have the same outputs and Jacobian
                assert torch.allclose(_flat(lin), _flat(model), rtol=0, atol=1e-13)
                assert model_report.update_norm == pytest.approx(twin_report.update_norm, rel=1e-12)
        for name, initial in lin.initial_parameters().items():   # the anchor is back at θ₀
            assert torch.equal(twin.anchor.get_parameter(name), initial)
        with torch.no_grad():
            distances.append(relative_distance(model(x_test), lin(x_test), f0))
    assert 0.08 < distances[1] / distances[0] < 0.12, distances


def test_kernel_gn_trains_the_linear_model_with_its_minimum_norm_step():
    model = MLP(5, 8, 1, 3, activation="tanh", seed=15, dtype=F64)
    lin = linearized(model)
    dense = DenseLinear(model)
    x, y = _data(5, 4, 3, seed=16)
    KernelGN(lin, lr=0.5).step(x, y)
    KernelGN(lin, lr=0.5).step(x, y)    # second step: outputs are f_lin, Jacobian still J(θ₀)
    dense_theta = dense.theta0.clone()
    for _ in range(2):
        jac = jacrev(lambda v: functional_call(dense.model, dense.unflat(v), (x,)))(dense.theta0).reshape(12, -1)
        eps = torch.softmax(dense(x, dense_theta), 1) - nn.functional.one_hot(y, 3)
        dense_theta = dense_theta - 0.5 * torch.linalg.pinv(jac) @ eps.reshape(-1)
    assert torch.allclose(_flat(lin), dense_theta, rtol=0, atol=1e-10)


def test_relative_distance_and_bad_input():
    f0 = torch.zeros(3, 2)
    f = torch.tensor([[3.0, 0], [0, 0], [0, 4]])
    assert relative_distance(f, f + torch.tensor([[0.5, 0], [0, 0], [0, 0]]), f0) == pytest.approx(0.5 / 5)
    assert math.isnan(relative_distance(f0, f, f0))
    with pytest.raises(ValueError, match="one shape"):
        relative_distance(f, f[:2], f0)
    with pytest.raises(TypeError, match="nn.Module"):
        linearized(lambda x: x)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        linearized(frozen)

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2)

        def forward(self, x):
            return self.a(x), x

    with pytest.raises(TypeError, match="one tensor"):
        linearized(Pair())(torch.randn(3, 2))
    with pytest.raises(TypeError, match="LinearizedModel"):
        TwinGN(nn.Linear(2, 2), lambda m: m)
    model = RevMLP(6, 8, 1, 3, seed=1, dtype=F64)
    x, y = _data(6, 4, 3, seed=2)
    with pytest.raises(ValueError, match="outputs must be finite logits of shape"):
        ReversibleGN(model, lr=0.1).step(x, y, outputs=torch.zeros(4, 2, dtype=F64))
    assert isinstance(linearized(model), LinearizedModel)
