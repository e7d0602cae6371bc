"""One name for a checkpoint's step in every group (issue 15 §4): ``checkpoints`` and ``params`` carry
``checkpoint_step``/``checkpoint_epoch``, as the analysis does; stores written before (``step``/``epoch``)
open with the new names, analyse, and are resumed with their own names. Real stores on disk; the
old layout is made from a new store by renaming its arrays on disk as the old writer named them."""

import json
import os

import numpy as np
import torch
import xarray as xr

from analysis import analyze
from dynamics import Recorder, open_run
from dynamics.models import RevMLP
from dynamics.store import root as root_record


def model_probe():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 6, generator=g, dtype=torch.float64), torch.arange(10) % 3
    return RevMLP(6, 8, 2, 3, seed=0, dtype=torch.float64), (x, y)


def write(path, steps, resume=False):
    model, probe = model_probe()
    with Recorder(path, model, probe, resume=resume) as rec:
        for step in steps:
            rec.log(step, epoch=step / 4, loss=float(step))
            rec.checkpoint(step, epoch=step / 4, train_loss=float(step))
    return path


def to_legacy(path):
    """Rename the checkpoint coordinates on disk to the names of stores written before."""
    old = {"checkpoint_step": "step", "checkpoint_epoch": "epoch"}
    for group in ("checkpoints", "params"):
        for new, name in old.items():
            os.rename(path / group / new, path / group / name)
        for array in (p for p in (path / group).iterdir() if p.is_dir()):
            meta_path = array / "zarr.json"
            meta = json.loads(meta_path.read_text())
            if "coordinates" in meta.get("attributes", {}):
                meta["attributes"]["coordinates"] = "step epoch"
                meta_path.write_text(json.dumps(meta))
    document = json.loads((path / "zarr.json").read_text())
    attrs = document["attributes"]
    committed = json.loads(attrs["committed"])
    for group in ("checkpoints", "params"):
        committed["variables"][group] = [old.get(n, n) for n in committed["variables"][group]]
    attrs["committed"] = json.dumps(committed)
    view = root_record.committed_view(root_record.read_nodes(path), committed)
    root_record.write_root(path, root_record.root_document(attrs, view))


def test_new_stores_use_one_name(tmp_path):
    path = write(tmp_path / "r.zarr", [0, 3, 7])
    for group in ("checkpoints", "params"):
        with xr.open_zarr(path, group=group) as ds:   # plain xarray
            assert "step" not in ds.variables and "epoch" not in ds.variables
            np.testing.assert_array_equal(ds["checkpoint_step"].values, [0, 3, 7])
            np.testing.assert_array_equal(ds["checkpoint_epoch"].values, [0, 0.75, 1.75])
    tree = open_run(path)
    assert tree["checkpoints"]["checkpoint_step"].dims == ("checkpoint",)
    result = analyze(path, probe_checkpoints="none")
    np.testing.assert_array_equal(result["checkpoint_step"].values, [0, 3, 7])
    assert "checkpoint_step" not in result["param"].values


def test_old_stores_read_with_the_new_names_and_resume_with_their_own(tmp_path):
    path = write(tmp_path / "r.zarr", [0, 3, 7])
    to_legacy(path)
    with xr.open_zarr(path, group="checkpoints") as ds:   # plain xarray sees the store as it is
        np.testing.assert_array_equal(ds["step"].values, [0, 3, 7])
    for group in ("checkpoints", "params"):
        ds = open_run(path)[group].to_dataset()
        assert "step" not in ds.variables and "epoch" not in ds.variables
        np.testing.assert_array_equal(ds["checkpoint_step"].values, [0, 3, 7])
        np.testing.assert_array_equal(ds["checkpoint_epoch"].values, [0, 0.75, 1.75])
    assert "checkpoint_step" not in analyze(path, probe_checkpoints="none")["param"].values
    write(path, [9, 12], resume=True)
    assert not (path / "checkpoints" / "checkpoint_step").exists()
    with xr.open_zarr(path, group="checkpoints") as ds:
        np.testing.assert_array_equal(ds["step"].values, [0, 3, 7, 9, 12])
        np.testing.assert_array_equal(ds["train_loss"].values, [0, 3, 7, 9, 12])
    np.testing.assert_array_equal(open_run(path, analysis="omit")["params"]["checkpoint_step"].values, [0, 3, 7, 9, 12])
    np.testing.assert_array_equal(analyze(path, probe_checkpoints="none")["checkpoint_step"].values, [0, 3, 7, 9, 12])
