"""``Recorder(params="all" | "first_last" | "none")`` (issue 15 §4): which checkpoints keep the trained
parameters, on real stores; the analysis' weight change under each mode against a brute-force
‖θ_t − θ_0‖ / ‖θ_0‖ from parameter snapshots taken in the test; resume keeps the mode."""

import json

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from analysis import analyze
from dynamics import Recorder, open_run
from dynamics.errors import StoreError

N_CHECKPOINTS = 5


def model_and_probe():
    torch.manual_seed(0)
    # 300x300 float64 weight (720 kB) > the 256 kB chunk target: one checkpoint per chunk; the small
    # tensors share chunks, so both chunk layouts are exercised.
    model = nn.Sequential(nn.Linear(6, 300), nn.Tanh(), nn.Linear(300, 300), nn.Tanh(), nn.Linear(300, 3)).double()
    g = torch.Generator().manual_seed(1)
    return model, (torch.randn(10, 6, generator=g, dtype=torch.float64), torch.arange(10) % 3)


def train(rec, model, start, stop):
    """One SGD step per step; a checkpoint at every step; returns {step: parameter snapshot}."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = rec._x_probe, torch.arange(10) % 3
    snapshots = {}
    for step in range(start, stop):
        snapshots[step] = {n.replace(".", "__"): p.detach().clone().numpy() for n, p in model.named_parameters()}
        rec.checkpoint(step, train_loss=1.0)
        rec.log(step, loss=1.0)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return snapshots


def record(path, mode, steps=N_CHECKPOINTS):
    model, probe = model_and_probe()
    with Recorder(path, model, probe, params=mode, layers=[]) as rec:
        snapshots = train(rec, model, 0, steps)
    return snapshots


def stored_params(path):
    with xr.open_zarr(path, group="params") as ds:   # plain xarray, as a user reads it
        return ds.load()


def rel_change(theta, theta0):
    return np.sqrt(np.sum((theta - theta0) ** 2)) / np.sqrt(np.sum(theta0 ** 2))


def test_all_keeps_every_checkpoint(tmp_path):
    snaps = record(tmp_path / "r.zarr", "all")
    ds = stored_params(tmp_path / "r.zarr")
    assert json.loads(json.dumps(open_run(tmp_path / "r.zarr").attrs["params"])) == "all"
    for name in snaps[0]:
        np.testing.assert_array_equal(ds[name].values, np.stack([snaps[s][name] for s in range(N_CHECKPOINTS)]))


@pytest.mark.parametrize("n", [1, 2, 3, N_CHECKPOINTS])
def test_first_last_keeps_the_first_and_the_latest(tmp_path, n):
    snaps = record(tmp_path / "r.zarr", "first_last", steps=n)
    ds = stored_params(tmp_path / "r.zarr")
    assert ds.sizes["checkpoint"] == n and list(ds["checkpoint_step"].values) == list(range(n))
    for name in snaps[0]:
        values = ds[name].values
        np.testing.assert_array_equal(values[0], snaps[0][name])
        np.testing.assert_array_equal(values[-1], snaps[n - 1][name])
        assert np.isnan(values[1:-1]).all()


def test_first_last_store_while_running_holds_first_and_latest(tmp_path):
    """What a kill at any checkpoint leaves: read with plain xarray after every committed checkpoint."""
    model, probe = model_and_probe()
    path = tmp_path / "r.zarr"
    with Recorder(path, model, probe, params="first_last", layers=[]) as rec:
        for k in range(4):
            snap = train(rec, model, k, k + 1)[k]
            rec.flush()
            ds = stored_params(path)
            w = ds["2__weight"].values
            assert w.shape[0] == k + 1
            np.testing.assert_array_equal(w[-1], snap["2__weight"])
            assert np.isfinite(w[0]).all() and np.isnan(w[1:-1]).all()


def test_none_stores_no_parameters_but_keeps_the_coordinates(tmp_path):
    record(tmp_path / "r.zarr", "none")
    ds = stored_params(tmp_path / "r.zarr")
    assert set(ds.variables) == {"checkpoint", "checkpoint_step", "checkpoint_epoch"} and list(ds["checkpoint_step"].values) == list(range(N_CHECKPOINTS))
    assert not any((tmp_path / "r.zarr" / "params").glob("*weight*"))


@pytest.mark.parametrize("mode", ["all", "first_last", "none"])
def test_analysis_weight_change_under_each_mode(tmp_path, mode):
    snaps = record(tmp_path / "r.zarr", mode)
    ds = analyze(tmp_path / "r.zarr", probe_checkpoints="none")
    if mode == "none":   # the documented rule: no parameters, an empty param dimension
        assert ds.sizes["param"] == 0 and ds["weight_rel_change"].shape == (N_CHECKPOINTS, 0)
        return
    names = list(ds["param"].values)
    assert sorted(names) == sorted(snaps[0])
    for j, name in enumerate(names):
        expected = np.array([rel_change(snaps[s][name], snaps[0][name]) for s in range(N_CHECKPOINTS)])
        got = ds["weight_rel_change"].values[:, j]
        if mode == "first_last":   # from init to the last only; NaN between
            np.testing.assert_allclose(got[[0, -1]], expected[[0, -1]], rtol=1e-12, atol=0)
            assert np.isnan(got[1:-1]).all()
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("mode", ["first_last", "none"])
def test_report_of_a_store_without_every_parameter(tmp_path, mode):
    from reports import write_report
    record(tmp_path / "r.zarr", mode)
    analyze(tmp_path / "r.zarr", probe_checkpoints="none")
    assert write_report(tmp_path / "r.zarr").is_file()


def test_resume_keeps_the_mode(tmp_path):
    path = tmp_path / "r.zarr"
    model, probe = model_and_probe()
    with Recorder(path, model, probe, params="first_last", layers=[]) as rec:
        first = train(rec, model, 0, 3)
    with pytest.raises(StoreError, match="params='all' differs from the store's params='first_last'"):
        Recorder(path, model, probe, params="all", layers=[], resume=True)
    with Recorder(path, model, probe, layers=[], resume=True) as rec:   # None: the stored mode
        assert rec.params == "first_last"
        later = train(rec, model, 3, 5)
    ds = stored_params(path)
    np.testing.assert_array_equal(ds["2__weight"].values[0], first[0]["2__weight"])
    np.testing.assert_array_equal(ds["2__weight"].values[4], later[4]["2__weight"])
    assert np.isnan(ds["2__weight"].values[1:4]).all()


def test_store_without_the_attribute_reads_as_all(tmp_path):
    """Stores written before the option: no root attribute ``params``; resumed as "all"."""
    path = tmp_path / "r.zarr"
    model, probe = model_and_probe()
    with Recorder(path, model, probe, layers=[]) as rec:
        train(rec, model, 0, 2)
    meta = json.loads((path / "zarr.json").read_text())
    del meta["attributes"]["params"]
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="params='none' differs from the store's params='all'"):
        Recorder(path, model, probe, params="none", layers=[], resume=True)
    with Recorder(path, model, probe, layers=[], resume=True) as rec:
        assert rec.params == "all"
        train(rec, model, 2, 3)
    assert np.isfinite(stored_params(path)["2__weight"].values).all()


def test_bad_mode(tmp_path):
    model, probe = model_and_probe()
    with pytest.raises(ValueError, match="params must be one of 'all', 'first_last', 'none', got 'some'"):
        Recorder(tmp_path / "r.zarr", model, probe, params="some")
    assert not (tmp_path / "r.zarr").exists()


_DIES_AT_THE_COMMIT = r'''
import os, sys, torch
import dynamics.store.writer as writer
from dynamics.recorder import Recorder
write_root = writer.root_record.write_root
def dying(path, document):   # the process ends abruptly (no cleanup) just before or just after the commit
    if sys.argv[2] == "after":
        write_root(path, document)
    os._exit(9)
m = torch.nn.Linear(2, 1, dtype=torch.float64)
rec = Recorder(sys.argv[1], m, (torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3)), ntk=False, layers=[],
               params="first_last")
for k in range(4):
    with torch.no_grad():
        m.bias.fill_(float(k))
    if k == 3:
        rec.flush()                                  # checkpoints 0..2 committed
        writer.root_record.write_root = dying
    rec.checkpoint(10 * k)
'''


@pytest.mark.parametrize("moment", ["before", "after"])
def test_first_last_keeps_the_latest_committed_parameters_when_the_writer_dies_at_the_commit(tmp_path, moment):
    """A writer that dies while committing checkpoint 3 leaves the first and the latest committed
    parameters readable by plain xarray: [0, NaN, 2] before its commit record, [0, NaN, 2, 3] (with the
    row of checkpoint 2 not yet cleared) after it; resuming and closing clears nothing committed."""
    import subprocess
    import sys
    import warnings
    path = tmp_path / "k.zarr"
    done = subprocess.run([sys.executable, "-c", _DIES_AT_THE_COMMIT, str(path), moment], capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bias = xr.open_datatree(path, engine="zarr")["params"]["bias"].values.ravel()
    expected = [0.0, np.nan, 2.0] if moment == "before" else [0.0, np.nan, 2.0, 3.0]
    np.testing.assert_array_equal(bias, expected)
    model = nn.Linear(2, 1, dtype=torch.float64)
    with Recorder(path, model, (torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3)), ntk=False, layers=[],
                  resume=True):
        pass
    np.testing.assert_array_equal(stored_params(path)["bias"].values.ravel(), expected)
