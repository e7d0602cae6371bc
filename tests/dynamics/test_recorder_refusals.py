"""What a Recorder refuses when it is created, rather than at a later call (found by a fresh user,
helper break-1): a lazy module not initialised yet, an NTK of a model that trains no parameter, and a
resume with a model whose dtype changed; and what a checkpoint call says when it raises an earlier
checkpoint's background error (its own step is not stored either). Values read back with plain xarray."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from dynamics import Recorder, open_run
from dynamics.errors import StoreError


def _probe(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=g).to(dtype), torch.arange(6) % 3


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))


def test_a_lazy_module_is_refused_before_the_recorder_initialises_it(tmp_path):
    """The Recorder's probe check would run the model's first forward pass (drawing its initial values
    from the caller's random stream); it refuses instead, naming the uninitialised parameters, and
    leaves the model and the folder untouched."""
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.LazyLinear(3))
    x, y = _probe()
    with pytest.raises(ValueError, match=r"2\.weight, 2\.bias of Sequential are not initialised yet.*forward pass"):
        Recorder(tmp_path / "lazy.zarr", model, (x, y), layers=[])
    assert not (tmp_path / "lazy.zarr").exists()
    assert nn.parameter.is_lazy(model[2].weight)
    model(x)                                                   # initialised by the caller: recorded
    with Recorder(tmp_path / "lazy.zarr", model, (x, y), layers=[]) as rec:
        rec.checkpoint(0)
    assert open_run(tmp_path / "lazy.zarr")["params"]["2__weight"].shape == (1, 3, 5)


def test_the_ntk_of_a_model_that_trains_no_parameter_is_refused_at_construction(tmp_path):
    """Before, the Recorder was created, every checkpoint returned and close() raised, the store
    "failed"; now the constructor says why. Without the NTK the model is recorded."""
    model = _mlp().requires_grad_(False)
    x, y = _probe()
    with pytest.raises(ValueError, match="no parameter with requires_grad=True.*ntk=False"):
        Recorder(tmp_path / "frozen.zarr", model, (x, y), layers=[])
    assert not (tmp_path / "frozen.zarr").exists()
    with Recorder(tmp_path / "frozen.zarr", model, (x, y), layers=["1"], ntk=False) as rec:
        rec.checkpoint(0)
    tree = xr.open_datatree(tmp_path / "frozen.zarr", engine="zarr")
    assert tree.attrs["status"] == "complete" and "ntk" not in tree["checkpoints"]
    with torch.no_grad():
        expected = torch.tanh(model[0](x)).numpy()
    np.testing.assert_array_equal(tree["checkpoints"]["rep_1"].values[0], expected)


def test_a_resume_whose_model_changed_dtype_is_refused_before_any_row(tmp_path):
    """A float32 store resumed with ``model.double()``: before, rows were logged and the first checkpoint
    raised (the store then ended "failed"); now the constructor refuses, naming the variable and both
    dtypes, and the store is left as it was and unlocked. The other way round (float64 store, float32
    model) is exact and accepted: the values read back equal the model's."""
    x, y = _probe()
    path = tmp_path / "f32.zarr"
    with Recorder(path, _mlp(), (x, y), layers=[]) as rec:
        rec.log(0, loss=1.0)
        rec.checkpoint(0)
    before = open_run(path).load()
    for ntk in (True, False):
        with pytest.raises(StoreError, match="cannot resume with this model: .*stored as float32, got float64"):
            Recorder(path, _mlp().double(), (x, y), layers=[], resume=True, ntk=ntk)
        assert not (path / ".lock").exists()
    xr.testing.assert_identical(open_run(path).load(), before)

    path = tmp_path / "kernel.zarr"                 # no parameter stored: the float64 NTK alone is refused
    with Recorder(path, _mlp(), (x, y), layers=[], params="none") as rec:
        rec.checkpoint(0)
    with pytest.raises(StoreError, match="cannot resume with this model: .*ntk.*stored as float32, got float64"):
        Recorder(path, _mlp().double(), (x, y), layers=[], resume=True)
    with Recorder(path, _mlp().double(), (x, y), layers=[], resume=True, ntk=False) as rec:
        rec.checkpoint(1)                           # without the NTK nothing of float64 is stored: accepted
    assert open_run(path)["checkpoints"]["checkpoint_step"].values.tolist() == [0, 1]

    path = tmp_path / "f64.zarr"
    with Recorder(path, _mlp().double(), (x.double(), y), layers=[]) as rec:
        rec.checkpoint(0)
    model = _mlp()
    with Recorder(path, model, (x.double(), y), layers=[], resume=True) as rec:
        rec.checkpoint(1)
    params = xr.open_zarr(path, group="params")
    assert params["0__weight"].dtype == np.float64
    np.testing.assert_array_equal(params["0__weight"].values[1], model[0].weight.detach().numpy())


class _FailsOnTheWorker(nn.Module):
    """Its forward pass raises on the NTK worker thread while ``fail`` is set (the snapshot keeps the
    flag of its checkpoint); on the caller's thread it never does."""

    def __init__(self):
        super().__init__()
        self.lin, self.fail = nn.Linear(4, 3), False

    def forward(self, x):
        if self.fail and threading.current_thread().name.startswith("ntk-worker"):
            raise RuntimeError("kernel exploded on the worker")
        return self.lin(x)


def test_a_call_that_raises_an_earlier_background_error_says_its_own_step_was_not_stored(tmp_path):
    """The kernel of step 0 fails on the worker; once it has finished (the test waits for its Future),
    checkpoint(1) — the first call after it — raises it. Its notes name step 0 (dropped) and step 1
    (this call: not stored either), so a loop that catches the error knows to call checkpoint(1)
    again — which stores it."""
    x, y = _probe()
    model = _FailsOnTheWorker()
    path = tmp_path / "w.zarr"
    rec = Recorder(path, model, (x, y), layers=[])
    assert rec.ntk_at_once is None
    model.fail = True
    assert rec.checkpoint(0)
    model.fail = False
    assert rec._outbox.pending[0].kernel.exception(timeout=60) is not None   # finished, failed
    with pytest.raises(RuntimeError, match="kernel exploded on the worker") as info:
        rec.checkpoint(1)
    notes = "\n".join(info.value.__notes__)
    assert "the checkpoint at step 0" in notes and "was not stored" in notes
    assert "(raised by the checkpoint at step 1, which was not stored)" in notes
    assert rec.checkpoint_steps == []
    assert rec.checkpoint(1)
    rec.close()
    tree = xr.open_datatree(path, engine="zarr")
    assert tree.attrs["status"] == "failed" and "step 0" in tree.attrs["error"]
    assert tree["checkpoints"]["checkpoint_step"].values.tolist() == [1]
    assert json.loads(tree.attrs["parameters"])[0][:2] == ["lin.weight", "lin__weight"]


def test_a_module_without_forward_is_named_as_such(tmp_path):
    """A wrapper module (e.g. a LightningModule) that holds the network but defines no forward() is
    refused at construction for that reason, not as a probe of the wrong width; nothing is written."""
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

    with pytest.raises(ValueError, match=r"Holder defines no forward\(\)") as info:
        Recorder(tmp_path / "r.zarr", Holder(), probe=_probe())
    assert "does not fit" not in str(info.value) and not (tmp_path / "r.zarr").exists()
