"""Representation capture against hand-written forward passes (float64, exact up to round-off)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynamics.capture import capture_representations, resolve_layers
from dynamics.models import MLP, RevMLP


def _inputs(n: int, d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("depth,activation,seed", [(1, "relu", 0), (2, "tanh", 1), (3, "gelu", 2)])
def test_mlp_defaults_match_manual_forward(depth, activation, seed):
    model = MLP(5, 7, depth, 3, activation=activation, seed=seed, dtype=torch.float64)
    x = _inputs(11, 5, seed)
    reps = capture_representations(model, x)
    assert list(reps) == [f"activations.{i}" for i in range(depth)]
    h = x
    for i, (layer, act) in enumerate(zip(model.layers, model.activations)):
        h = act(h @ layer.weight.T + layer.bias)
        torch.testing.assert_close(reps[f"activations.{i}"], h.detach(), rtol=1e-12, atol=1e-12)
        assert reps[f"activations.{i}"].shape == (11, 7)
        assert not reps[f"activations.{i}"].requires_grad


@pytest.mark.parametrize("depth,first_linear,seed", [(1, True, 0), (2, True, 3), (3, False, 4)])
def test_revmlp_defaults_match_manual_blocks(depth, first_linear, seed):
    model = RevMLP(6, 9, depth, 3, first_linear=first_linear, seed=seed, dtype=torch.float64)
    x = _inputs(8, 6, seed)
    reps = capture_representations(model, x)
    assert list(reps) == [f"blocks.{b}" for b in range(depth)]
    h = x
    for b, block in enumerate(model.blocks):
        x1, x2 = h[:, :3], h[:, 3:]
        f = block.F.activation(x2 @ block.F.proj.T) @ block.F.linear.weight.T + block.F.linear.bias
        y1 = x1 + f
        g = block.G.activation(y1 @ block.G.proj.T) @ block.G.linear.weight.T + block.G.linear.bias
        h = torch.cat([y1, x2 + g], dim=1).detach()
        torch.testing.assert_close(reps[f"blocks.{b}"], h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(reps[f"blocks.{depth - 1}"], model.embed(x).detach(), rtol=0, atol=0)


def test_float32_capture_and_chunks_agree():
    model = MLP(4, 16, 2, 3, seed=5)
    x = _inputs(13, 4, 5, torch.float32)
    whole = capture_representations(model, x, ["layers.0", "readout"])
    for chunk in (1, 4, 13, 50):
        chunked = capture_representations(model, x, ["layers.0", "readout"], chunk_size=chunk)
        for name in whole:
            torch.testing.assert_close(chunked[name], whole[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(whole["readout"], model(x).detach(), rtol=1e-6, atol=1e-6)


def test_explicit_names_keep_order_and_single_string():
    model = MLP(4, 6, 2, 3, seed=0)
    assert resolve_layers(model, ["readout", "layers.1"]) == ["readout", "layers.1"]
    assert resolve_layers(model, "layers.0") == ["layers.0"]
    assert resolve_layers(model, ("activations.1",)) == ["activations.1"]


def test_generic_model_defaults():
    with_activations = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert resolve_layers(with_activations) == ["1", "3"]
    linear_only = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5), nn.Linear(5, 2))
    assert resolve_layers(linear_only) == ["0", "1"]
    nested = nn.Sequential(nn.Sequential(nn.Linear(3, 4), nn.GELU()), nn.Linear(4, 2))
    assert resolve_layers(nested) == ["0.1"]
    with pytest.raises(ValueError, match="pass layers"):
        resolve_layers(nn.Linear(3, 2))


def test_unknown_layer_lists_available_names():
    model = MLP(4, 6, 2, 3, seed=0)
    with pytest.raises(ValueError, match=r"unknown layer 'layers\.7'.*'activations\.0'.*'readout'"):
        resolve_layers(model, ["layers.7"])
    with pytest.raises(ValueError, match="unknown layer 'blocks.0'"):
        capture_representations(model, torch.zeros(2, 4), ["blocks.0"])


@pytest.mark.parametrize("bad,error,match", [
    ([], ValueError, "empty"),
    (["readout", "readout"], ValueError, "twice"),
    ([3], TypeError, "3"),
    (7, TypeError, "int"),
])
def test_bad_layer_lists(bad, error, match):
    with pytest.raises(error, match=match):
        resolve_layers(MLP(4, 6, 1, 3, seed=0), bad)


def test_bad_inputs():
    model = MLP(4, 6, 1, 3, seed=0)
    with pytest.raises(TypeError, match="Module"):
        capture_representations("model", torch.zeros(2, 4))
    with pytest.raises(TypeError, match="ndarray"):
        capture_representations(model, torch.zeros(2, 4).numpy())
    with pytest.raises(ValueError, match=r"\(0, 4\)"):
        capture_representations(model, torch.zeros(0, 4))
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        capture_representations(model, torch.zeros(2, 4), chunk_size=0)
    with pytest.raises(TypeError, match="2.5"):
        capture_representations(model, torch.zeros(2, 4), chunk_size=2.5)


class _Branchy(nn.Module):
    """Dropout, a tuple-returning sub-module and a module called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4, dtype=torch.float64)
        self.drop = nn.Dropout(0.5)
        self.pair = _Pair()
        self.shared = nn.Tanh()
        self.fail = False

    def forward(self, x):
        if self.fail:
            raise RuntimeError("forward failed")
        h, _ = self.pair(self.drop(self.linear(x)))
        return self.shared(self.shared(h))


class _Pair(nn.Module):
    def forward(self, h):
        return h * 2, h.sum()


def test_eval_mode_tuple_outputs_and_mode_restored():
    model = _Branchy()
    model.train()
    model.pair.eval()  # mixed flags must come back exactly
    x = _inputs(5, 3, 0)
    reps = capture_representations(model, x, ["drop", "pair"])
    expected = (x @ model.linear.weight.T + model.linear.bias).detach()
    torch.testing.assert_close(reps["drop"], expected, rtol=0, atol=0)  # dropout inactive in eval
    torch.testing.assert_close(reps["pair"], 2 * expected, rtol=0, atol=0)
    assert model.training and model.drop.training and not model.pair.training


def test_identity_output_is_not_a_view_of_the_input():
    model = nn.Sequential(nn.Identity(), nn.Linear(3, 2))
    x = torch.randn(4, 3)
    reps = capture_representations(model, x, ["0"])
    reps["0"].zero_()
    assert x.abs().sum() > 0


def test_module_called_twice_raises_and_hooks_are_removed():
    model = _Branchy()
    with pytest.raises(ValueError, match="'shared' was called 2 times"):
        capture_representations(model, _inputs(5, 3, 0), ["shared"])
    model.fail = True
    model.train()
    with pytest.raises(RuntimeError, match="forward failed") as info:
        capture_representations(model, _inputs(5, 3, 0), ["linear", "shared"])
    assert "on x = tensor (5, 3) float64" in "".join(info.value.__notes__)
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training


def test_output_without_sample_dimension_raises():
    class Pool(nn.Module):
        def forward(self, h):
            return h.mean(0)

    model = nn.Sequential(nn.Linear(3, 4), Pool())
    with pytest.raises(ValueError, match=r"'1' output has shape \(4,\)"):
        capture_representations(model, torch.randn(5, 3), ["1"])


def test_runs_without_grad_even_inside_enable_grad():
    model = MLP(4, 6, 1, 3, seed=0)
    with torch.enable_grad():
        reps = capture_representations(model, torch.randn(3, 4))
    assert not reps["activations.0"].requires_grad and reps["activations.0"].grad_fn is None
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------- in-place operations after the layer
class _EditsInput(nn.Module):
    """A user module that edits the tensor it receives (the captured layer's output) in place."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def forward(self, h):
        if self.how == "add":
            h += 1.0
        else:
            h.mul_(2.0)
        return h


class _Residual(nn.Module):
    """h = a(x); h += b(h): the residual sum is written into a's output."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 8)

    def forward(self, x):
        h = self.a(x)
        h += self.b(torch.tanh(h))
        return h


_INPLACE_MODELS = {
    "relu": lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2)),   # issue #11
    "hardtanh": lambda: nn.Sequential(nn.Linear(4, 8), nn.Hardtanh(-0.2, 0.2, inplace=True), nn.Linear(8, 2)),
    "leaky_relu": lambda: nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.1, inplace=True), nn.Linear(8, 2)),
    "add_": lambda: nn.Sequential(nn.Linear(4, 8), _EditsInput("add"), nn.Linear(8, 2)),
    "mul_": lambda: nn.Sequential(nn.Linear(4, 8), _EditsInput("mul"), nn.ReLU(inplace=True), nn.Linear(8, 2)),
    "residual": lambda: nn.Sequential(_Residual(), nn.Linear(8, 2)),
}


def _first_layer_reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x Wᵀ + b of the first nn.Linear, computed by hand (no forward pass of the model)."""
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    return (x @ first.weight.detach().T + first.bias.detach()).detach()


@pytest.mark.parametrize("kind", sorted(_INPLACE_MODELS))
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_inplace_operations_after_the_layer_do_not_change_the_capture(kind, chunk_size):
    torch.manual_seed(0)
    model = _INPLACE_MODELS[kind]().double()
    layer = "0.a" if kind == "residual" else "0"
    x = _inputs(16, 4, 7) * 3
    expected = _first_layer_reference(model, x)
    assert (expected < -0.2).any() and (expected > 0.2).any()   # the later ops do change these values
    reps = capture_representations(model, x, [layer], chunk_size=chunk_size)
    torch.testing.assert_close(reps[layer], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_recorder_stores_the_layer_output_before_an_inplace_relu(tmp_path, dtype, tol):
    from dynamics import Recorder, open_run

    torch.manual_seed(0)
    model = _INPLACE_MODELS["relu"]().to(dtype)
    x = _inputs(12, 4, 3, dtype) * 2
    y = torch.arange(12) % 2
    with Recorder(tmp_path / "run.zarr", model, (x, y), layers=["0", "1"], ntk=False) as rec:
        rec.checkpoint(0)
    checkpoints = open_run(tmp_path / "run.zarr")["checkpoints"]
    expected = _first_layer_reference(model, x)
    assert (expected < 0).sum() > 10
    torch.testing.assert_close(torch.from_numpy(checkpoints["rep_0"].values[0]), expected, rtol=tol, atol=tol)
    torch.testing.assert_close(torch.from_numpy(checkpoints["rep_1"].values[0]), expected.clamp_min(0),
                               rtol=tol, atol=tol)
