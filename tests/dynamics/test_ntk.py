"""Empirical NTK against a dense brute-force Jacobian contraction.

Reference: the full-batch Jacobian of the flattened outputs with respect to one flat vector of all
trained parameters, J = jacrev(θ ↦ f(x; θ))  (N·O × P), and Θ = J(x1) J(x2)ᵀ as an explicit
matrix product. Tolerances: float64 rtol 1e-10 (round-off only); float32 rtol 2e-4 / atol 1e-5·max|Θ|
against the float64 reference of the same model.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from dynamics.models import MLP, RevMLP
from dynamics.ntk import empirical_ntk, structured_problem
from dynamics.ntk.blocks import GRAM_BLOCK, assemble_kernel, row_gram

F64 = dict(rtol=1e-10, atol=1e-12)


def dense_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
    """Θ (N1, N2, O, O) from explicit P-wide Jacobians, model in eval mode."""
    model = copy.deepcopy(model).eval()
    trained = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    constants = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    constants.update(dict(model.named_buffers()))
    flat = torch.cat([p.reshape(-1) for p in trained.values()])
    sizes = [p.numel() for p in trained.values()]

    def outputs(theta, x):
        params = {n: t.reshape(p.shape) for (n, p), t in zip(trained.items(), theta.split(sizes))}
        return functional_call(model, (params, constants), (x,)).reshape(x.shape[0], -1)

    j1 = jacrev(outputs)(flat, x1)
    j2 = j1 if x2 is None else jacrev(outputs)(flat, x2)
    return torch.einsum("nop,mqp->nmoq", j1, j2)


def traced(full: torch.Tensor) -> torch.Tensor:
    return torch.diagonal(full, dim1=2, dim2=3).sum(-1)


def _x(n: int, shape, seed: int, dtype=torch.float64) -> torch.Tensor:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return torch.randn((n,) + shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class SharedAndNonlinear(nn.Module):
    """A Linear run twice, a free scale parameter and a LayerNorm: no structured path."""

    def __init__(self, d=4, h=6, o=3, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(d, h, dtype=dtype)
        self.mid = nn.Linear(h, h, dtype=dtype)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, h, dtype=dtype))
        self.norm = nn.LayerNorm(h, dtype=dtype)
        self.out = nn.Linear(h, o, dtype=dtype)

    def forward(self, x):
        h = self.mid(torch.tanh(self.inp(x)))
        h = torch.sin(self.mid(h)) * self.scale
        return self.out(self.norm(h))


class TwiceCalled(nn.Module):
    def __init__(self, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(1)
        self.a, self.b = nn.Linear(3, 5, dtype=dtype), nn.Linear(5, 2, dtype=dtype)
        self.c = nn.Linear(5, 5, dtype=dtype)

    def forward(self, x):
        return self.b(torch.relu(self.c(torch.relu(self.c(torch.relu(self.a(x)))))))


class Tied(nn.Module):
    def __init__(self, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(2)
        self.enc, self.dec = nn.Linear(4, 3, dtype=dtype), nn.Linear(3, 4, bias=False, dtype=dtype)
        self.dec.weight = nn.Parameter(self.enc.weight.T.detach().clone())
        self.enc2 = nn.Linear(4, 3, dtype=dtype)
        self.enc2.weight = self.enc.weight  # the same Parameter in two Linear modules

    def forward(self, x):
        return self.dec(torch.tanh(self.enc(x))) + self.enc2(x).sum(1, keepdim=True)


class HiddenUse(nn.Module):
    """Every parameter is in a Linear called once, but one weight also acts outside the call."""

    def __init__(self, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(3)
        self.a, self.b = nn.Linear(3, 4, dtype=dtype), nn.Linear(4, 2, dtype=dtype)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x))) + (x @ self.a.weight.T).pow(2).sum(1, keepdim=True)


class Sequence(nn.Module):
    """A Linear applied to every position of a (N, T, d) input: one parameter use per position."""

    def __init__(self, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(4)
        self.a, self.b = nn.Linear(3, 4, dtype=dtype), nn.Linear(4, 2, dtype=dtype)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)).mean(1))


class PartlyFrozen(nn.Module):
    """Frozen weight with a trained bias, a frozen layer, an unused layer and a dropout."""

    def __init__(self, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(5)
        self.a, self.b = nn.Linear(3, 5, dtype=dtype), nn.Linear(5, 5, dtype=dtype)
        self.c, self.unused = nn.Linear(5, 2, dtype=dtype), nn.Linear(2, 2, dtype=dtype)
        self.drop = nn.Dropout(0.5)
        self.a.weight.requires_grad_(False)
        self.b.requires_grad_(False)
        self.c.bias.requires_grad_(False)

    def forward(self, x):
        return self.c(self.drop(torch.relu(self.b(torch.tanh(self.a(x))))))


MODELS = {
    "mlp-relu-1": lambda: (MLP(5, 7, 1, 3, seed=0, dtype=torch.float64), 5),
    "mlp-tanh-3": lambda: (MLP(4, 6, 3, 2, activation="tanh", seed=1, dtype=torch.float64), 4),
    "revmlp-1": lambda: (RevMLP(6, 9, 1, 3, seed=2, dtype=torch.float64), 6),
    "revmlp-3-gelu": lambda: (RevMLP(8, 5, 3, 4, first_linear=False, activation="gelu", seed=3,
                                     dtype=torch.float64), 8),
    "partly-frozen": lambda: (PartlyFrozen(), 3),
}
OTHER_MODELS = {
    "shared-nonlinear": lambda: (SharedAndNonlinear(), 4),
    "twice-called": lambda: (TwiceCalled(), 3),
    "tied": lambda: (Tied(), 4),
    "hidden-use": lambda: (HiddenUse(), 3),
    "sequence": lambda: (Sequence(), (2, 3)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("method", ["structured", "jacobian", "auto"])
def test_float64_matches_dense_reference(name, method):
    model, shape = MODELS[name]()
    x1, x2 = _x(7, shape, 10), _x(5, shape, 11)
    ref_sym, ref_cross = dense_ntk(model, x1), dense_ntk(model, x1, x2)
    assert structured_problem(model, x1) is None  # so "auto" takes the structured path
    for trace, chunk in itertools.product([False, True], [None, 1, 3]):
        sym = empirical_ntk(model, x1, trace=trace, method=method, chunk_size=chunk)
        cross = empirical_ntk(model, x1, x2, trace=trace, method=method, chunk_size=chunk)
        expect_sym = traced(ref_sym) if trace else ref_sym
        expect_cross = traced(ref_cross) if trace else ref_cross
        torch.testing.assert_close(sym, expect_sym, **F64)
        torch.testing.assert_close(cross, expect_cross, **F64)
        assert sym.dtype == torch.float64 and cross.shape == expect_cross.shape


@pytest.mark.parametrize("name", sorted(OTHER_MODELS))
def test_unsupported_models_use_the_jacobian_path(name):
    model, shape = OTHER_MODELS[name]()
    x1, x2 = _x(6, shape, 20), _x(4, shape, 21)
    problem = structured_problem(model, x1)
    assert isinstance(problem, str) and problem
    with pytest.raises(ValueError, match="method='structured' cannot compute"):
        empirical_ntk(model, x1, method="structured")
    ref = dense_ntk(model, x1, x2)
    for method, trace, chunk in itertools.product(["auto", "jacobian"], [False, True], [None, 4]):
        got = empirical_ntk(model, x1, x2, trace=trace, method=method, chunk_size=chunk)
        torch.testing.assert_close(got, traced(ref) if trace else ref, **F64)
    sym = empirical_ntk(model, x1, trace=False, chunk_size=4)
    torch.testing.assert_close(sym, dense_ntk(model, x1), **F64)


@pytest.mark.parametrize("name,reason", [
    ("shared-nonlinear", "'scale' belongs to Parameter|not a plain nn.Linear"),
    ("twice-called", "'c' runs 2 times"),
    ("tied", "shared by modules"),
    ("hidden-use", "'a.weight' also acts outside"),
    ("sequence", "one row per sample"),
])
def test_structured_refusal_says_why(name, reason):
    model, shape = OTHER_MODELS[name]()
    with pytest.raises(ValueError, match=reason):
        empirical_ntk(model, _x(3, shape, 0), method="structured")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_float32_matches_float64_reference(name):
    model64, shape = MODELS[name]()
    model = copy.deepcopy(model64).float()
    x1, x2 = _x(6, shape, 30, torch.float32), _x(5, shape, 31, torch.float32)
    ref = dense_ntk(model64, x1.double(), x2.double())
    for method, trace in itertools.product(["structured", "jacobian"], [False, True]):
        got = empirical_ntk(model, x1, x2, trace=trace, method=method)
        expect = traced(ref) if trace else ref
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expect, rtol=2e-4, atol=1e-5 * expect.abs().max().item())


def test_dtype_float64_on_a_float32_model_uses_a_copy():
    model = MLP(4, 8, 2, 3, seed=7)
    x = _x(6, 4, 40, torch.float32)
    got = empirical_ntk(model, x, trace=False, dtype=torch.float64)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, dense_ntk(copy.deepcopy(model).double(), x.double()), **F64)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    rev = RevMLP(6, 5, 2, 3, seed=1)
    x = _x(4, 6, 41, torch.float32)
    got = empirical_ntk(rev, x, method="structured", dtype=torch.float64)
    torch.testing.assert_close(got, traced(dense_ntk(copy.deepcopy(rev).double(), x.double())), **F64)
    assert rev.readout.dtype == torch.float32


def test_symmetric_result_is_exactly_symmetric():
    model = RevMLP(6, 9, 2, 3, seed=4, dtype=torch.float64)
    x = _x(9, 6, 50)
    for method, chunk in itertools.product(["structured", "jacobian"], [None, 2, 4]):
        full = empirical_ntk(model, x, trace=False, method=method, chunk_size=chunk)
        assert torch.equal(full, full.permute(1, 0, 3, 2))
        tr = empirical_ntk(model, x, method=method, chunk_size=chunk)
        assert torch.equal(tr, tr.T)


def test_model_state_is_untouched():
    model = PartlyFrozen()
    model.train()
    model.c.eval()
    x = _x(5, 3, 60)
    model(x).sum().backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        a = empirical_ntk(model, x, method="structured")
    with torch.inference_mode():
        b = empirical_ntk(model, x, method="jacobian")
    torch.testing.assert_close(a, b, **F64)
    torch.testing.assert_close(a, traced(dense_ntk(model, x)), **F64)  # eval mode: dropout off
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])
        assert (p.grad is None) == (grads[n] is None) and (p.grad is None or torch.equal(p.grad, grads[n]))
    assert model.training and model.drop.training and not model.c.training
    assert all(not m._forward_hooks for m in model.modules())
    assert not a.requires_grad and not b.requires_grad


def test_scalar_output_and_auto_equals_structured():
    model = nn.Sequential(nn.Linear(3, 4, dtype=torch.float64), nn.Tanh(), nn.Linear(4, 1, dtype=torch.float64),
                          nn.Flatten(0))
    x = _x(5, 3, 70)
    got = empirical_ntk(model, x, trace=False, method="structured")
    assert got.shape == (5, 5, 1, 1)
    torch.testing.assert_close(got, dense_ntk(model, x), **F64)
    assert structured_problem(model, x) is None


def test_outputs_independent_of_parameters_give_zero():
    model = PartlyFrozen()
    model.a.bias.requires_grad_(False)  # only c.weight trained
    x = _x(4, 3, 80)
    torch.testing.assert_close(empirical_ntk(model, x), traced(dense_ntk(model, x)), **F64)


def test_bad_inputs():
    model = MLP(4, 6, 1, 3, seed=0)
    x = torch.randn(5, 4)
    cases = [
        (dict(model="mlp", x1=x), TypeError, "Module"),
        (dict(model=model, x1=x.numpy()), TypeError, "ndarray"),
        (dict(model=model, x1=x.long()), TypeError, "input has dtype torch.int64"),
        (dict(model=nn.Linear(4, 3), x1=x.long()), RuntimeError, "Long"),
        (dict(model=model, x1=x[:0]), ValueError, r"\(0, 4\)"),
        (dict(model=model, x1=torch.tensor(1.0)), ValueError, r"shape \(\)"),
        (dict(model=model, x1=x, x2=torch.randn(3, 5)), ValueError, r"\(5,\).*\(4,\)"),
        (dict(model=model, x1=x, trace="yes"), TypeError, "'yes'"),
        (dict(model=model, x1=x, method="dense"), ValueError, "'dense'"),
        (dict(model=model, x1=x, chunk_size=0), ValueError, "got 0"),
        (dict(model=model, x1=x, chunk_size=1.5), TypeError, "1.5"),
        (dict(model=model, x1=x, dtype=torch.int32), TypeError, "torch.int32"),
        (dict(model=model, x1=x, dtype="float64"), TypeError, "'float64'"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            empirical_ntk(**kwargs)
    frozen = MLP(4, 6, 1, 3, seed=0).requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters with requires_grad=True"):
        empirical_ntk(frozen, x)
    pooled = nn.Sequential(nn.Linear(4, 2), _Pool())
    for method, chunk in itertools.product(["auto", "structured", "jacobian"], [None, 2]):
        # a chunk of 2 samples pooled to 2 rows passes the shape test; the gradient test catches it
        with pytest.raises(ValueError, match=r"one row per input; for [1-5] inputs it returned shape \(2,\)"
                                             r"|samples influence each other"):
            empirical_ntk(pooled, x, method=method, chunk_size=chunk)


class _Pool(nn.Module):
    def forward(self, h):
        return h.mean(0)


class _BatchSizes(nn.Module):
    """Wraps a model and records the batch size of every forward call."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.sizes = inner, []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        return self.inner(x)


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_structured_forward_passes_never_exceed_the_chunk(chunk):
    model = _BatchSizes(MLP(4, 6, 2, 3, seed=0, dtype=torch.float64))
    x1, x2 = _x(11, 4, 90), _x(7, 4, 91)
    got = empirical_ntk(model, x1, x2, trace=False, method="structured", chunk_size=chunk)
    torch.testing.assert_close(got, dense_ntk(model.inner, x1, x2), **F64)
    assert model.sizes and max(model.sizes) <= chunk   # no extra probe pass: every chunk is checked itself


def test_assemble_kernel_blocks_and_feature_reuse():
    calls = []

    def features(x):
        calls.append(x.shape[0])
        return x

    def contract(a, b):
        return a @ b.T

    x1, x2 = _x(10, 3, 92), _x(4, 3, 93)
    torch.testing.assert_close(assemble_kernel(features, contract, x1, x2, 3), x1 @ x2.T, **F64)
    assert calls == [3, 3, 1] * 3 + [1, 3, 1]  # outer chunk, then its inner chunks recomputed
    calls.clear()
    torch.testing.assert_close(assemble_kernel(features, contract, x1, x2, 4), x1 @ x2.T, **F64)
    assert calls == [4, 4, 4, 2]  # the single inner chunk is computed once
    calls.clear()
    sym = assemble_kernel(features, contract, x1, None, 4)
    torch.testing.assert_close(sym, x1 @ x1.T, **F64)
    assert calls == [4, 4, 2, 4, 2, 2]  # upper triangle only: (0,0) (0,1) (0,2) (1,1) (1,2) (2,2)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_seeded_shape_grid(seed):
    g = torch.Generator().manual_seed(seed)
    pick = lambda *v: v[torch.randint(len(v), (1,), generator=g).item()]  # noqa: E731
    if seed % 2:
        model = RevMLP(pick(4, 8, 10), pick(3, 7, 16), pick(1, 2, 4), 3, first_linear=bool(seed % 3),
                       activation=pick("relu", "tanh", "gelu"), seed=seed, dtype=torch.float64)
    else:
        model = MLP(pick(3, 9), pick(5, 12), pick(1, 2, 4), pick(1, 4), activation=pick("relu", "tanh", "gelu"),
                    seed=seed, dtype=torch.float64)
    n1, n2 = pick(1, 6, 13), pick(1, 5, 9)
    x1, x2 = _x(n1, model.dim, seed), _x(n2, model.dim, seed + 100)
    ref = dense_ntk(model, x1, x2)
    for method, chunk, trace in itertools.product(["structured", "jacobian"], [None, 4], [False, True]):
        got = empirical_ntk(model, x1, x2, trace=trace, method=method, chunk_size=chunk)
        torch.testing.assert_close(got, traced(ref) if trace else ref, **F64)


def test_row_gram_long_inner_dimension_in_float32():
    """Unblocked, float32 a aᵀ with 2 rows and K = 3e6 is off by ~6e-5 (measured); blocked: ~1e-6."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3_000_000, generator=g)
    b = torch.rand(3, 3_000_000, generator=g)
    ref = a.double() @ b.double().T
    got = row_gram(a, b)
    assert got.dtype == torch.float32 and got.shape == (2, 3)
    torch.testing.assert_close(got.double(), ref, rtol=5e-6, atol=0)
    small = torch.randn(4, GRAM_BLOCK + 7, dtype=torch.float64, generator=g)
    torch.testing.assert_close(row_gram(small, small[:2]), small @ small[:2].T, **F64)


# --------------------------------------------------------- preconditions verified on every chunk (issue #11)
class _EditsInput(nn.Module):
    """h ← h + tanh(h) written into the tensor it receives (a layer's output)."""

    def forward(self, h):
        return h.add_(torch.tanh(h))


class _HalvesLarge(nn.Module):
    """In place, and only where some coordinate exceeds 2 in absolute value: h ← h / 2."""

    def forward(self, h):
        return h.mul_(torch.where(h.abs().amax(1, keepdim=True) > 2, 0.5, 1.0))


class _HiddenUseOnSomeSamples(nn.Module):
    """a's weight also acts outside its call, but only on samples with a coordinate beyond 3."""

    def __init__(self, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(6)
        self.a, self.b = nn.Linear(4, 6, dtype=dtype), nn.Linear(6, 2, dtype=dtype)

    def forward(self, x):
        extra = (x @ self.a.weight.T).pow(2).sum(1, keepdim=True)
        return self.b(torch.tanh(self.a(x))) + torch.where(x.abs().amax(1, keepdim=True) > 3, extra, 0.0)


def _clipped_inputs(dtype=torch.float64) -> torch.Tensor:
    """8 samples; only samples 4–7 drive Linear(4, 6) of the issue's model beyond the Hardtanh clip."""
    x = _x(8, 4, 100, dtype) * 0.05
    x[4:] *= 100
    return x


INPLACE_MODELS = {   # name → (model, x1, x2); all are served by the structured path
    "hardtanh-issue": lambda: (nn.Sequential(nn.Linear(4, 6), nn.Hardtanh(inplace=True), nn.Linear(6, 2)),
                               _clipped_inputs(), _x(5, 4, 101)),
    "relu-inplace": lambda: (nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True), nn.Linear(6, 6),
                                           nn.ReLU(inplace=True), nn.Linear(6, 3)), _x(7, 4, 102), _x(5, 4, 103)),
    "edits-input": lambda: (nn.Sequential(nn.Linear(4, 6), _EditsInput(), nn.Linear(6, 2)),
                            _x(7, 4, 104), _x(5, 4, 105)),
    "inplace-second-chunk": lambda: (nn.Sequential(nn.Linear(4, 6), _HalvesLarge(), nn.Linear(6, 2)),
                                     _clipped_inputs(), _x(5, 4, 106) * 0.05),
}


def _inplace_case(name: str, dtype=torch.float64):
    torch.manual_seed(7)
    model, x1, x2 = INPLACE_MODELS[name]()
    return model.to(dtype), x1.to(dtype), x2.to(dtype)


@pytest.mark.parametrize("name", sorted(INPLACE_MODELS))
@pytest.mark.parametrize("method", ["auto", "structured", "jacobian"])
def test_inplace_operations_after_a_layer_float64(name, method):
    model, x1, x2 = _inplace_case(name)
    if name in ("hardtanh-issue", "inplace-second-chunk"):   # the in-place op acts on samples 4–7 only
        with torch.no_grad():
            z = model[0](x1)
        hit = (z.abs() > (1 if name == "hardtanh-issue" else 2)).any(1)
        assert not hit[:4].any() and hit[4:].all()
    ref_sym, ref_cross = dense_ntk(model, x1), dense_ntk(model, x1, x2)
    for trace, chunk in itertools.product([True, False], [None, 4]):
        sym = empirical_ntk(model, x1, trace=trace, method=method, chunk_size=chunk)
        cross = empirical_ntk(model, x1, x2, trace=trace, method=method, chunk_size=chunk)
        torch.testing.assert_close(sym, traced(ref_sym) if trace else ref_sym, **F64)
        torch.testing.assert_close(cross, traced(ref_cross) if trace else ref_cross, **F64)
    swapped = empirical_ntk(model, x2, x1, method=method, chunk_size=3)   # x1's clipped samples as x2
    torch.testing.assert_close(swapped, traced(ref_cross).T, **F64)


@pytest.mark.parametrize("name", sorted(INPLACE_MODELS))
def test_inplace_operations_after_a_layer_float32(name):
    """float32 against the float64 dense reference: rtol 2e-4, atol 1e-5·max|Θ| (as above)."""
    model64, x1, x2 = _inplace_case(name)
    model = copy.deepcopy(model64).float()
    ref = dense_ntk(model64, x1, x2)
    for method, trace, chunk in itertools.product(["auto", "structured"], [True, False], [None, 4]):
        got = empirical_ntk(model, x1.float(), x2.float(), trace=trace, method=method, chunk_size=chunk)
        expect = traced(ref) if trace else ref
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expect, rtol=2e-4, atol=1e-5 * expect.abs().max().item())


def test_a_hidden_use_on_the_second_chunk_only_is_caught():
    model = _HiddenUseOnSomeSamples()
    clean, wild = _x(8, 4, 110) * 0.3, _x(3, 4, 111) * 0.3
    wild[1, 2] = 5.0                    # only this sample uses a.weight outside its call
    x1 = torch.cat([clean, wild])       # chunks of 4: the use is in the third chunk
    assert structured_problem(model, clean) is None   # a check on a clean subset passes...
    assert "'a.weight' also acts outside" in structured_problem(model, x1)
    for x_1, x_2 in [(x1, None), (clean, wild), (wild, clean)]:
        ref = dense_ntk(model, x_1, x_2)
        for chunk in (None, 4, 2):
            with pytest.raises(ValueError, match="method='structured' cannot compute.*'a.weight' also acts"):
                empirical_ntk(model, x_1, x_2, method="structured", chunk_size=chunk)
            for trace in (True, False):
                got = empirical_ntk(model, x_1, x_2, trace=trace, method="auto", chunk_size=chunk)
                torch.testing.assert_close(got, traced(ref) if trace else ref, **F64)


class _CallsTwiceOnSomeInputs(nn.Module):
    """The layer runs a second time only when some sample of the batch is large (batch-dependent)."""

    def __init__(self, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(8)
        self.a, self.b = nn.Linear(4, 4, dtype=dtype), nn.Linear(4, 2, dtype=dtype)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        if bool((x.abs() > 3).any()):
            h = torch.tanh(self.a(h))
        return self.b(h)


def test_a_layer_run_twice_on_a_later_chunk_is_refused_by_structured():
    model = _CallsTwiceOnSomeInputs()
    x = _x(8, 4, 120) * 0.3
    x[6, 0] = 4.0
    assert structured_problem(model, x[:4]) is None
    for chunk in (None, 4):
        with pytest.raises(ValueError, match="'a' runs 2 times"):
            empirical_ntk(model, x, method="structured", chunk_size=chunk)
        with pytest.raises(ValueError, match="'a' runs 2 times"):
            empirical_ntk(model, x[:4], x, method="structured", chunk_size=chunk)


def test_a_user_hook_that_edits_a_layer_output_in_place_is_harmless():
    """Forward hooks run after ours on the copy we hand on, so Θ is that of the hooked model."""
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    x = _x(5, 4, 130)
    handle = model[0].register_forward_hook(lambda m, a, out: out.mul_(2.0))
    try:
        ref = traced(dense_ntk(model, x))
        for method in ("auto", "structured"):
            torch.testing.assert_close(empirical_ntk(model, x, method=method), ref, **F64)
    finally:
        handle.remove()
    assert not torch.allclose(empirical_ntk(model, x, method="structured"), ref)


class _EditsALayerInputAfterUse(nn.Module):
    """b's input is scaled in place after b ran: the recorded input is no longer what b saw."""

    def __init__(self, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(9)
        self.a, self.b = nn.Linear(4, 6, dtype=dtype), nn.Linear(6, 2, dtype=dtype)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        y = self.b(h)
        h.mul_(2.0)
        return y


def test_a_recorded_input_changed_in_place_is_refused():
    model = _EditsALayerInputAfterUse()
    with pytest.raises(ValueError, match="input of nn.Linear 'b' is modified in place"):
        empirical_ntk(model, _x(5, 4, 131), method="structured")
