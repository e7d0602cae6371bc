"""Optimiser habits (param_groups, state_dict, schedulers) and input validation of the GN solvers."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from dynamics.gauss_newton import KernelGN, ReversibleGN
from dynamics.models import MLP, RevMLP


def _setup(n=5):
    model = RevMLP(8, 16, 2, 3, seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    return model, torch.randn(n, 8, dtype=torch.float64, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_param_groups_and_state_dict_round_trip_through_weights_only_load():
    model, _, _ = _setup()
    opt = ReversibleGN(model, lr=0.25, loss="mse", combine="sum", rtol=1e-9, atol=1e-12, ce_target="exact", solver="svd")
    assert [len(g["params"]) for g in opt.param_groups] == [8] and opt.param_groups[0]["lr"] == 0.25
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    fresh = ReversibleGN(copy.deepcopy(model), lr=1.0)
    fresh.load_state_dict(loaded)
    group = fresh.param_groups[0]
    assert (group["lr"], group["loss"], group["combine"], group["rtol"], group["atol"], group["ce_target"],
            group["solver"]) == (0.25, "mse", "sum", 1e-9, 1e-12, "exact", "svd")


def test_bad_state_dict_is_rejected_and_settings_kept():
    model, _, _ = _setup()
    opt = ReversibleGN(model, lr=0.5)
    state = opt.state_dict()
    state["param_groups"][0]["combine"] = "median"
    with pytest.raises(ValueError, match="median"):
        opt.load_state_dict(state)
    assert opt.param_groups[0]["combine"] == "exact"


def test_lr_is_read_from_param_groups_and_schedulers_work():
    model, x, y = _setup(n=3)
    twin = copy.deepcopy(model)
    opt = ReversibleGN(model, lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    scheduler.step()
    assert opt.param_groups[0]["lr"] == 0.5
    start = _snapshot(model)
    report = opt.step(x, y)
    assert report.lr == 0.5
    ReversibleGN(twin, lr=0.5).step(x, y)
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(start[k], v) for k, v in model.state_dict().items())
    opt.zero_grad()  # a no-op, accepted


def _bad_inputs(model):
    x = torch.randn(4, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    nan_x = x.clone()
    nan_x[1, 2] = float("nan")
    inf_x = x.clone()
    inf_x[0, 0] = float("inf")
    return [
        (torch.randn(4, 6, dtype=torch.float64), y, "ce", ValueError, r"\(4, 6\)"),
        (x.float(), y, "ce", TypeError, "float32"),
        (nan_x, y, "ce", ValueError, "non-finite"),
        (inf_x, y, "ce", ValueError, "non-finite"),
        (x, torch.tensor([0, 1, 3, 0]), "ce", ValueError, "label 3"),
        (x, torch.tensor([0, 1, -2, 0]), "ce", ValueError, "label -2"),
        (x, y.float(), "ce", TypeError, "float32"),
        (x, y.int(), "ce", TypeError, "int32"),
        (x, torch.full((4, 3), float("inf"), dtype=torch.float64), "mse", ValueError, "non-finite"),
        (x, torch.zeros(4, 5, dtype=torch.float64), "mse", ValueError, r"\(4, 5\)"),
        ("x", y, "ce", TypeError, "str"),
    ]


@pytest.mark.parametrize("case", range(11))
@pytest.mark.parametrize("solver", ["reversible", "kernel"])
def test_bad_input_raises_naming_the_value_and_leaves_parameters_untouched(case, solver):
    model, _, _ = _setup()
    x, y, loss, error, match = _bad_inputs(model)[case]
    opt = ReversibleGN(model, lr=0.5, loss=loss) if solver == "reversible" else KernelGN(model, lr=0.5, loss=loss)
    before = _snapshot(model)
    with pytest.raises(error, match=match):
        opt.step(x, y)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_reversible_gn_rejects_models_it_cannot_handle():
    with pytest.raises(TypeError, match="MLP"):
        ReversibleGN(MLP(4, 8, 1, 2), lr=0.1)
    with pytest.raises(TypeError, match="Linear"):
        ReversibleGN(torch.nn.Linear(4, 2), lr=0.1)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(lr=0.0), ValueError, "lr"), (dict(lr=float("nan")), ValueError, "nan"), (dict(lr="1"), TypeError, "'1'"),
    (dict(lr=0.1, loss="hinge"), ValueError, "hinge"), (dict(lr=0.1, combine="mean"), ValueError, "mean"),
    (dict(lr=0.1, rtol=-1.0), ValueError, "rtol"), (dict(lr=0.1, atol=float("inf")), ValueError, "atol"),
    (dict(lr=0.1, solver="qr"), ValueError, "qr"), (dict(lr=0.1, ce_target="newton"), ValueError, "newton"),
])
def test_bad_settings_raise_naming_the_value(kwargs, error, match):
    model, _, _ = _setup()
    with pytest.raises(error, match=match):
        ReversibleGN(model, **kwargs)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(lr=0.1, damping=-1.0), ValueError, "damping"), (dict(lr=0.1, chunk_size=0), ValueError, "chunk_size"),
    (dict(lr=0.1, method="svd"), ValueError, "svd"),
])
def test_kernel_gn_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        KernelGN(MLP(4, 8, 1, 2), **kwargs)


def test_kernel_gn_restores_training_mode_and_rejects_wrong_feature_size():
    model = MLP(4, 8, 1, 2, dtype=torch.float64)
    model.train()
    opt = KernelGN(model, lr=0.1)
    opt.step(torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 1, 0]))
    assert model.training
    before = _snapshot(model)
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        opt.step(torch.randn(3, 5, dtype=torch.float64), torch.tensor([0, 1, 0]))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
