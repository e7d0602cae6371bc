"""Wrappers rename parameters (issue 21 item 9): every wrapper is unwrapped to canonical names in one place.

References: the names of the unwrapped network (``named_parameters`` / ``named_modules`` of the
module the researcher wrote), stores read back with plain xarray, NTKs of the network itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from dynamics import Recorder
from dynamics.capture import available_layers, capture_representations
from dynamics.models import MLP
from dynamics.ntk import empirical_ntk
from dynamics.wrappers import canonical_modules, canonical_names, canonical_parameters, unwrap_model


def _net():
    torch.manual_seed(0)
    return MLP(4, 6, 2, 3, seed=0)


def _probe():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)


def test_the_issue_example_compiled_then_resumed_uncompiled_keeps_one_history(tmp_path):
    net = _net()
    names = [n for n, p in net.named_parameters()]
    compiled = torch.compile(net, backend="eager")
    path = tmp_path / "run.zarr"
    with Recorder(path, compiled, _probe(), ntk_background=False) as rec:   # default layers too
        rec.checkpoint(0)
        with torch.no_grad():
            net.layers[0].weight.add_(0.1)
        rec.checkpoint(1)
    with Recorder(path, net, _probe(), resume=True, ntk_background=False) as rec:
        with torch.no_grad():
            net.layers[0].weight.add_(0.1)
        rec.checkpoint(2)
    params = xr.open_zarr(path, group="params")
    stored = sorted(v for v in params.data_vars)
    assert stored == sorted(n.replace(".", "__") for n in names)          # 4 variables for 4 tensors
    weight = params["layers__0__weight"].values
    assert np.isfinite(weight).all() and weight.shape[0] == 3
    np.testing.assert_allclose(weight[2] - weight[0], 0.2, rtol=1e-6)
    reps = [v for v in xr.open_zarr(path, group="checkpoints").data_vars if v.startswith("rep_")]
    assert reps == [f"rep_{layer.replace('.', '__')}" for layer in net.representation_layers]


def test_nested_wrappers_anywhere_are_transparent():
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.Linear(4, 4), nn.Tanh()), nn.Linear(4, 2))
    wrapped = nn.DataParallel(nn.Sequential(plain[0], torch.compile(plain[1], backend="eager"),
                                            checkpoint_wrapper(plain[2])))
    want = [n for n, _ in plain.named_parameters()]
    assert list(canonical_parameters(wrapped)) == want
    assert list(canonical_modules(wrapped)) == [n for n, _ in plain.named_modules()]
    raw = [n for n, _ in unwrap_model(wrapped).named_parameters()]
    assert raw == ["0.weight", "0.bias", "1._orig_mod.0.weight", "1._orig_mod.0.bias",
                   "2._checkpoint_wrapped_module.weight", "2._checkpoint_wrapped_module.bias"]
    assert list(canonical_names(unwrap_model(wrapped)).values()) == want
    assert available_layers(wrapped) == [n for n, _ in plain.named_modules() if n]
    x = torch.randn(5, 3)
    got = capture_representations(wrapped, x, ["1.1", "2"])
    with torch.no_grad():
        torch.testing.assert_close(got["1.1"], plain[1](plain[0](x)))
        torch.testing.assert_close(got["2"], plain(x))
    torch.testing.assert_close(empirical_ntk(wrapped, x.double(), dtype=torch.float64),
                               empirical_ntk(plain, x.double(), dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_a_user_module_called_module_keeps_its_name():
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = nn.Linear(2, 2)

        def forward(self, x):
            return self.module(x)
    assert list(canonical_parameters(Holder())) == ["module.weight", "module.bias"]
    assert unwrap_model(Holder()).__class__ is Holder


def test_frozen_parameters_and_shared_modules_follow_named_parameters():
    torch.manual_seed(0)
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.Tanh(), shared, nn.Linear(3, 2))
    model[3].bias.requires_grad_(False)
    compiled = torch.compile(model, backend="eager")
    assert list(canonical_parameters(compiled)) == ["0.weight", "0.bias", "3.weight"]
    assert list(canonical_parameters(compiled, trained=False)) == [n for n, _ in model.named_parameters()]


def test_lightning_fabric_and_ddp_wrapped_lightning_modules_are_unwrapped():
    lightning = pytest.importorskip("lightning")

    class Lit(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 2)

        def forward(self, x):
            return self.net(x)
    fabric = lightning.Fabric(accelerator="cpu", devices=1)
    module = fabric.setup_module(Lit())
    assert type(module).__name__ == "_FabricModule"
    assert list(canonical_parameters(module)) == ["net.weight", "net.bias"]
    assert isinstance(unwrap_model(module), Lit)
    parallel = nn.DataParallel(Lit())                     # what a Trainer's strategy wraps the module in
    assert list(canonical_parameters(parallel)) == ["net.weight", "net.bias"]


def test_fsdp_flat_parameters_are_refused_by_name():
    # FSDP cannot be built on a CPU-only single process here; its flat parameter is named like this
    holder = nn.Module()
    holder._flat_param = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="FSDP flat parameter"):
        canonical_parameters(holder)
