"""Recorder writes: values validated when given, rows kept until written, dtypes stored exactly
(half precisions as float32, no silent narrowing), probes checked against the model at construction."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from dynamics import Recorder, open_run
from dynamics.errors import StoreError
from dynamics.models import MLP


def _probe(n=6, d=4, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=gen, dtype=dtype), torch.randint(0, 3, (n,), generator=gen)


# ------------------------------------------------------------------ case 2a: validation at log time
@pytest.mark.parametrize("bad_step", [2 ** 63, np.uint64(2 ** 63), 2 ** 70])
def test_step_beyond_int64_is_refused_at_log_and_earlier_rows_are_kept(tmp_path, bad_step):
    path = tmp_path / "r.zarr"
    rec = Recorder(path, MLP(4, 4, 1, 3), _probe(), ntk=False, layers=[])
    for step in range(5):
        rec.log(step, loss=float(step))
    with pytest.raises(ValueError, match=r"step must be <= 2\*\*63 - 1 .* got " + str(int(bad_step))):
        rec.log(bad_step, loss=1.0)
    with pytest.raises(ValueError, match="2\\*\\*63"):
        rec.checkpoint(bad_step)
    rec.log(2 ** 63 - 1, loss=9.0)                      # the largest int64 is fine
    rec.flush()
    rec.close()
    tree = open_run(path)
    np.testing.assert_array_equal(tree["metrics"]["step"].values, [0, 1, 2, 3, 4, 2 ** 63 - 1])
    np.testing.assert_array_equal(tree["metrics"]["loss"].values, [0, 1, 2, 3, 4, 9])
    assert tree.attrs["status"] == "complete"


@pytest.mark.parametrize("kwargs, match", [({"loss": 10 ** 400}, "'loss' is beyond the float64 range"),
                                           ({"epoch": 10 ** 400}, "'epoch' is beyond the float64 range"),
                                           ({"loss": 1 + 2j}, "'loss' must be a real scalar"),
                                           ({"loss": "0.5"}, "'loss' must be a real scalar")])
def test_bad_values_are_refused_at_log_and_nothing_is_lost(tmp_path, kwargs, match):
    path = tmp_path / "r.zarr"
    rec = Recorder(path, MLP(4, 4, 1, 3), _probe(), ntk=False, layers=[])
    rec.log(0, loss=1.0)
    with pytest.raises((TypeError, ValueError), match=match):
        rec.log(1, **kwargs)
    with pytest.raises((TypeError, ValueError), match="'x_" + match.split("'")[1] if "loss" in match else match):
        rec.checkpoint(1, **{("x_" + k if k != "epoch" else k): v for k, v in kwargs.items()})
    rec.log(1, loss=2.0)                                 # the refused step was not used up
    rec.close()
    np.testing.assert_array_equal(open_run(path)["metrics"]["loss"].values, [1.0, 2.0])


# ------------------------------------------------------------------ case 2b: a full disk
@pytest.fixture
def small_disk(mount_tmpfs):
    """A 3 MiB tmpfs mounted at tmp_path/disk (tests run as root in CI); skipped where mounting fails."""
    return mount_tmpfs("3m", "disk")


def _fill(folder) -> os.PathLike:
    """Fill the file system of ``folder`` with one file; return its path."""
    filler = folder / "filler.bin"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_disk_full_keeps_rows_and_the_next_flush_writes_them(small_disk):
    path = small_disk / "r.zarr"
    model = MLP(4, 8, 1, 3)
    rec = Recorder(path, model, _probe(), layers=[])
    for step in range(5):
        rec.log(step, loss=float(step))
    rec.flush()
    filler = _fill(small_disk)
    for step in range(5, 12):
        rec.log(step, loss=float(step))
    with pytest.raises(StoreError, match=r"No space left on device"):
        rec.flush()
    with pytest.raises(StoreError, match=r"No space left on device"):
        rec.flush()                                     # still full: tried again, still kept
    assert open_run(path)["metrics"].sizes["step"] == 5
    os.unlink(filler)
    rec.flush()                                         # space again: the kept rows are written
    assert rec.checkpoint(12)
    filler = _fill(small_disk)
    rec.log(13, loss=13.0)
    with pytest.raises(StoreError, match=r"No space left on device"):
        rec.flush()                                     # the checkpoint (in the background) and row 13
    os.unlink(filler)
    rec.close()
    tree = open_run(path)
    np.testing.assert_array_equal(tree["metrics"]["loss"].values, list(range(12)) + [13])
    np.testing.assert_array_equal(tree["checkpoints"]["checkpoint_step"].values, [12])
    assert tree.attrs["status"] == "complete"
    xr.testing.assert_equal(xr.open_zarr(path, group="metrics").load(), tree["metrics"].to_dataset().load())


def test_disk_still_full_at_close_is_never_marked_complete(small_disk):
    path = small_disk / "r.zarr"
    rec = Recorder(path, MLP(4, 8, 1, 3), _probe(), ntk=False, layers=[])
    rec.log(0, loss=0.0)
    rec.flush()
    _fill(small_disk)
    rec.log(1, loss=1.0)
    with pytest.raises(StoreError, match="No space left on device"):
        rec.close()
    assert rec.closed
    tree = open_run(path)
    assert tree.attrs["status"] != "complete"
    np.testing.assert_array_equal(tree["metrics"]["loss"].values, [0.0])


# ------------------------------------------------------------------ case 3: dtype changes
@pytest.mark.parametrize("ntk, layers, variable", [(True, None, "checkpoints/ntk"),
                                                   (False, None, "checkpoints/rep_activations__0"),
                                                   (False, [], "params/layers__0__weight")])
def test_a_wider_dtype_is_refused_naming_variable_and_dtypes(tmp_path, ntk, layers, variable):
    path = tmp_path / "r.zarr"
    model = MLP(4, 5, 1, 3, seed=1)
    rec = Recorder(path, model, _probe(), ntk=ntk, layers=layers)
    rec.log(0, loss=1.0)
    assert rec.checkpoint(0)
    expected = {k: v.detach().clone() for k, v in model.named_parameters()}
    model.double()
    with torch.no_grad():
        model.layers[0].weight.add_(1e-9)
    rec.log(1, loss=2.0)
    with pytest.raises(StoreError, match=f"{variable} is stored as float32, got float64"):
        rec.checkpoint(1)
    model.float()
    assert rec.checkpoint(1)                             # the step was not used up
    rec.close()
    tree = open_run(path)
    assert tree["checkpoints"].sizes["checkpoint"] == 2
    np.testing.assert_array_equal(tree["params"]["layers__0__weight"].values[0], expected["layers.0.weight"].numpy())
    np.testing.assert_array_equal(tree["metrics"]["loss"].values, [1.0, 2.0])


def test_a_narrower_dtype_is_stored_exactly_in_the_wider_arrays(tmp_path):
    path = tmp_path / "r.zarr"
    model = MLP(4, 5, 1, 3, seed=1, dtype=torch.float64)
    x, y = _probe(dtype=torch.float64)
    rec = Recorder(path, model, (x, y))
    rec.checkpoint(0)
    model.float()
    rec.checkpoint(1)
    rec.close()
    tree = open_run(path)
    assert tree["params"]["layers__0__weight"].dtype == np.float64
    np.testing.assert_array_equal(tree["params"]["layers__0__weight"].values[1],
                                  model.layers[0].weight.detach().double().numpy())


# ------------------------------------------------------------------ case 4: half precisions
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_are_stored_as_float32(tmp_path, dtype):
    path = tmp_path / "r.zarr"
    model = MLP(4, 6, 2, 3, seed=2, dtype=dtype)
    x, y = _probe(dtype=dtype)
    with Recorder(path, model, (x, y)) as rec:
        assert rec.checkpoint(0)
        with torch.no_grad():
            model.layers[0].weight.mul_(2)
        assert rec.checkpoint(1)
    tree = open_run(path)
    assert tree["probe"]["x"].dtype == np.float32
    np.testing.assert_array_equal(tree["probe"]["x"].values, x.float().numpy())
    for name, p in model.named_parameters():
        stored = tree["params"][name.replace(".", "__")]
        assert stored.dtype == np.float32
        np.testing.assert_array_equal(stored.values[1], p.detach().float().numpy())   # bf16 → f32 is exact
    # the NTK of the model in its own precision, by a dense Jacobian computed in float32 from the same weights
    ntk = tree["checkpoints"]["ntk"].values[1]
    assert ntk.dtype == np.float32 and ntk.shape == (6, 6)
    ref = model.float()
    params = {k: v.detach() for k, v in ref.named_parameters()}
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(ref, p, (x.float(),)))(params)
    dense = torch.cat([j.reshape(6, 3, -1) for j in jac.values()], dim=-1)
    expected = torch.einsum("nop,mop->nm", dense, dense).numpy()
    np.testing.assert_allclose(ntk, expected, rtol=0.05, atol=0.05 * np.abs(expected).max())  # half-precision tolerance
    assert tree["checkpoints"]["rep_activations__0"].dtype == np.float32


class _Flaky(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.fail = nn.Linear(4, 3), False

    def forward(self, x):
        if self.fail:
            raise RuntimeError("flaky layer")
        return self.lin(x)


@pytest.mark.parametrize("background,layers", [(False, []), (False, ["lin"]), (True, ["lin"])])
def test_a_failed_checkpoint_does_not_use_up_its_step(tmp_path, background, layers):
    """A checkpoint whose computation fails in the call (the NTK computed at once, or the
    representations) raises there and leaves its step free to be checkpointed again."""
    model = _Flaky()
    rec = Recorder(tmp_path / "r.zarr", model, _probe(), layers=layers, ntk_background=background)
    model.fail = True
    with pytest.raises(RuntimeError, match="flaky") as info:
        rec.checkpoint(0)
    assert "checkpoint at step 0" in "".join(getattr(info.value, "__notes__", []))
    model.fail = False
    assert rec.checkpoint(0)
    rec.close()
    np.testing.assert_array_equal(open_run(tmp_path / "r.zarr")["checkpoints"]["checkpoint_step"].values, [0])


class _FlakyWithGrad(_Flaky):
    """Fails only while gradients are recorded (the NTK), not in the forward passes without them."""

    def forward(self, x):
        if self.fail and torch.is_grad_enabled():
            raise RuntimeError("flaky layer")
        return self.lin(x)


def test_a_failed_background_kernel_of_the_first_checkpoint_is_raised_by_the_next_call(tmp_path):
    """With the NTK on the worker thread and nothing else computed in the call, a failure of the first
    kernel surfaces at the first call after it finished (the test waits for its Future; a note names
    the step): the checkpoint is dropped, every row kept, that step can be checkpointed, and the store
    ends "failed"."""
    model = _FlakyWithGrad()
    path = tmp_path / "r.zarr"
    rec = Recorder(path, model, _probe(), layers=[])
    rec.log(0, loss=0.5)
    model.fail = True
    assert rec.checkpoint(0)                      # the snapshot (fail=True) fails on the worker thread
    model.fail = False
    assert rec._outbox.pending[0].kernel.exception(timeout=60) is not None   # finished, failed
    with pytest.raises(RuntimeError, match="flaky") as info:
        rec.checkpoint(1)                          # the first call after it raises it
    assert "checkpoint at step 0" in "".join(getattr(info.value, "__notes__", []))
    rec.log(1, loss=1.5)
    assert rec.checkpoint(1)
    rec.close()
    run = open_run(path)
    assert run.attrs["status"] == "failed" and "flaky" in run.attrs["error"]
    assert run["checkpoints"]["checkpoint_step"].values.tolist() == [1]
    np.testing.assert_array_equal(run["metrics"]["loss"].values, [0.5, 1.5])


def test_conversion_refuses_what_a_store_cannot_hold():
    from dynamics.convert import to_numpy
    with pytest.raises(TypeError, match="the NTK: dtype torch.complex64 cannot be stored"):
        to_numpy(torch.zeros(2, dtype=torch.complex64), "the NTK")
    with pytest.raises(TypeError, match="sparse"):
        to_numpy(torch.eye(2).to_sparse(), "w")
    with pytest.raises(TypeError, match="must be a torch.Tensor or numpy array, got list"):
        to_numpy([1.0], "w")
    t = torch.ones(3, requires_grad=True)
    a = to_numpy(t, "w")
    with torch.no_grad():
        t.add_(1)
    np.testing.assert_array_equal(a, [1, 1, 1])         # a copy: training on does not change it
    assert to_numpy(np.ones(2, np.float16), "w").dtype == np.float32


# ------------------------------------------------------------------ case 5: probes the model cannot take
def test_probe_of_the_wrong_width_is_refused_at_construction(tmp_path):
    x = torch.randn(10, 5)
    with pytest.raises(ValueError, match=r"probe x of shape \(10, 5\) does not fit the model: its first layer "
                                         r"'layers.0' expects 4 input features"):
        Recorder(tmp_path / "r.zarr", MLP(4, 8, 1, 3), (x, torch.zeros(10, dtype=torch.long)))
    assert not (tmp_path / "r.zarr").exists()


@pytest.mark.parametrize("make, match", [
    (lambda: (torch.randn(10), torch.zeros(10)), r"probe x of shape \(10,\) does not fit the model"),
    (lambda: (torch.randn(10, 2, 5), torch.zeros(10)), r"probe x of shape \(10, 2, 5\) does not fit the model"),
    (lambda: (torch.randint(0, 4, (10, 4)), torch.zeros(10)), r"probe x of shape \(10, 4\) does not fit the model.*int64"),
    (lambda: (torch.randn(10, 4), torch.zeros(9)), "probe x has 10 samples but y has 9"),
])
def test_other_probes_the_model_cannot_take(tmp_path, make, match):
    with pytest.raises((TypeError, ValueError), match=match):
        Recorder(tmp_path / "r.zarr", MLP(4, 8, 1, 3), make())
    assert not (tmp_path / "r.zarr").exists()


def test_probe_check_leaves_the_model_as_it_was(tmp_path):
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 3))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    Recorder(tmp_path / "r.zarr", model, _probe(), ntk=False, layers=[]).close()
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(torch.get_rng_state(), state)


def test_a_model_that_does_not_return_one_row_per_input_is_refused(tmp_path):
    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x).sum(0)
    with pytest.raises(ValueError, match=r"returned \(3,\) for 2 inputs"):
        Recorder(tmp_path / "r.zarr", Pooled(), _probe(), layers=[])


# ------------------------------------------------------------------ case 1: what waits in memory
def test_flush_secs_writes_rows_that_waited_too_long(tmp_path):
    import time
    path = tmp_path / "r.zarr"
    rec = Recorder(path, MLP(4, 4, 1, 3), _probe(), ntk=False, layers=[], flush_every=10 ** 6, flush_secs=0.2)
    rec.log(0, loss=0.0)
    rec.log(1, loss=1.0)
    assert rec.last_step is None                         # young rows wait in memory
    time.sleep(0.25)
    rec.log(2, loss=2.0)                                 # the oldest row is 0.25 s old: all three are written
    assert rec.last_step == 2
    np.testing.assert_array_equal(xr.open_zarr(path, group="metrics")["loss"].values, [0.0, 1.0, 2.0])
    rec.close()
    for bad in (0, -1.0, float("nan"), "10", True):
        with pytest.raises(ValueError, match="flush_secs must be a finite number of seconds > 0"):
            Recorder(tmp_path / "x.zarr", MLP(4, 4, 1, 3), _probe(), flush_secs=bad)


def test_a_checkpoint_commits_the_rows_logged_up_to_its_step(tmp_path):
    path = tmp_path / "r.zarr"
    rec = Recorder(path, MLP(4, 4, 1, 3), _probe(), ntk=False, layers=[], flush_every=10 ** 6)
    for step in range(6):
        rec.log(step, loss=float(step))
    assert rec.checkpoint(3)                              # rows 0..3 go with it; 4 and 5 wait
    assert rec.last_step == 3
    committed = json.loads(open_run(path).attrs["committed"])
    assert committed["metrics"] == 4 and committed["checkpoint"] == 1
    assert rec.checkpoint(10)                             # all rows up to 10
    assert rec.last_step == 5
    rec.close()
