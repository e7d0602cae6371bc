"""RevMLP and MLP: exact inverse, seeding, dtypes, shapes and bad arguments."""

from __future__ import annotations

import itertools

import pytest
import torch

from dynamics.models import MLP, RevMLP


@pytest.mark.parametrize("dim,hidden,depth,first_linear,activation", list(itertools.product(
    [2, 8, 30], [4, 64], [1, 3], [True, False], ["relu", "tanh"])))
def test_revmlp_inverse_reconstructs_to_round_off(dim, hidden, depth, first_linear, activation):
    model = RevMLP(dim, hidden, depth, 2, first_linear=first_linear, activation=activation, seed=depth,
                   dtype=torch.float64)
    x = torch.randn(16, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(dim))
    with torch.no_grad():
        assert float((model.inverse(model.embed(x)) - x).abs().max()) <= 1e-12
        z = torch.randn(16, dim, dtype=torch.float64)
        assert float((model.embed(model.inverse(z)) - z).abs().max()) <= 1e-12


def test_revmlp_inverse_float32_tolerance():
    model = RevMLP(16, 128, 4, 10, seed=3)
    x = torch.randn(32, 16)
    with torch.no_grad():
        assert float((model.inverse(model.embed(x)) - x).abs().max()) <= 1e-4  # stated float32 tolerance


def test_revmlp_structure_readout_and_features():
    model = RevMLP(8, 12, 2, 3, seed=0, dtype=torch.float64)
    r = model.readout
    assert torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-14)
    assert model.blocks[0].F.is_linear and not model.blocks[1].F.is_linear
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained == [f"blocks.{b}.{c}.linear.{w}" for b in range(2) for c in "FG" for w in ("weight", "bias")]
    u = torch.randn(5, 4, dtype=torch.float64)
    coupling = model.blocks[1].F
    assert torch.allclose(coupling.features(u), torch.relu(u @ coupling.proj.T))
    x = torch.randn(5, 8, dtype=torch.float64)
    assert torch.allclose(model(x), model.embed(x) @ r.T)
    x1, x2 = x.chunk(2, dim=1)
    y1 = x1 + model.blocks[0].F(x2)
    assert torch.allclose(model.blocks[0](x), torch.cat([y1, x2 + model.blocks[0].G(y1)], dim=1))
    assert model.representation_layers == ["blocks.0", "blocks.1"]


@pytest.mark.parametrize("make", [lambda s: RevMLP(6, 10, 2, 3, seed=s), lambda s: MLP(6, 10, 2, 3, seed=s)])
def test_seed_fixes_weights_without_touching_global_rng(make):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = make(4), make(4), make(5)
    assert torch.equal(torch.rand(3), expected)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))


@pytest.mark.parametrize("cls", [RevMLP, MLP])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_shapes(cls, dtype):
    model = cls(6, 10, 2, 3, dtype=dtype)
    assert all(p.dtype == dtype for p in model.parameters())
    assert model(torch.randn(7, 6, dtype=dtype)).shape == (7, 3)
    with pytest.raises(TypeError, match="dtype"):
        model(torch.randn(7, 6, dtype=torch.float64 if dtype == torch.float32 else torch.float32))
    with pytest.raises(ValueError, match="6 features"):
        model(torch.randn(7, 5, dtype=dtype))


@pytest.mark.parametrize("args,kwargs,error,match", [
    ((7, 10, 2, 3), {}, ValueError, "dim=7"),
    ((6, 10, 2, 8), {}, ValueError, "n_classes=8"),
    ((6, 0, 2, 3), {}, ValueError, "hidden"),
    ((6, 10, 0, 3), {}, ValueError, "depth"),
    ((6, 10, 2.0, 3), {}, TypeError, "depth"),
    ((6, 10, 2, 3), {"activation": "swish"}, ValueError, "swish"),
    ((6, 10, 2, 3), {"seed": -1}, ValueError, "seed"),
    ((6, 10, 2, 3), {"dtype": torch.int64}, TypeError, "int64"),
])
def test_revmlp_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        RevMLP(*args, **kwargs)


@pytest.mark.parametrize("args,kwargs,error,match", [
    ((0, 10, 2, 3), {}, ValueError, "dim"),
    ((6, 10, True, 3), {}, TypeError, "depth"),
    ((6, 10, 2, 3), {"activation": "swish"}, ValueError, "swish"),
])
def test_mlp_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        MLP(*args, **kwargs)


@pytest.mark.parametrize("init_std", [1e-3, 1e-2, 1e-6])
def test_revmlp_published_initialisation(init_std):
    """init_std: trained weights N(0, init_std²) (sample moments of ~2·10⁵ draws), zero biases; inverse exact."""
    model = RevMLP(40, 1024, 2, 10, seed=3, dtype=torch.float64, init_std=init_std)
    weights = torch.cat([p.reshape(-1) for n, p in model.named_parameters() if n.endswith("weight")])
    assert weights.numel() == 2 * 2 * 1024 * 20
    assert abs(float(weights.mean())) < 5 * init_std / weights.numel() ** 0.5
    assert float(weights.std()) == pytest.approx(init_std, rel=0.01)
    assert all(float(p.abs().max()) == 0.0 for n, p in model.named_parameters() if n.endswith("bias"))
    x = torch.randn(8, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.inverse(model.embed(x)), x, rtol=0, atol=1e-12)
    again = RevMLP(40, 1024, 2, 10, seed=3, dtype=torch.float64, init_std=init_std)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_revmlp_projection_scale():
    """projection="hidden": C entries N(0, 1/hidden) (released code); "input": N(0, 1/(dim/2))."""
    for projection, variance in (("input", 1 / 20), ("hidden", 1 / 4000)):
        model = RevMLP(40, 4000, 1, 10, seed=1, dtype=torch.float64, projection=projection)
        proj = model.blocks[0].F.proj
        assert float(proj.var()) == pytest.approx(variance, rel=0.03)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"init_std": 0.0}, ValueError, "init_std must be a finite number > 0, got 0.0"),
    ({"init_std": -1e-3}, ValueError, "init_std"),
    ({"init_std": float("nan")}, ValueError, "init_std"),
    ({"init_std": "1e-3"}, TypeError, "init_std must be a number"),
    ({"projection": "output"}, ValueError, "projection must be 'input' or 'hidden', got 'output'"),
])
def test_revmlp_bad_initialisation(kwargs, error, match):
    with pytest.raises(error, match=match):
        RevMLP(40, 16, 2, 10, **kwargs)
