"""Combining runs never leaks an integer fill value (issue 15 §4): runs that differ in length, in
checkpoint schedule or in their parameters are padded with NaN in float variables; integer variables
of the combined Dataset are only the index coordinates and per-run labels, which every run has.
Real stores written by ``dynamics.Recorder``."""

import numpy as np
import torch

from analysis import open_runs
from dynamics import Recorder
from dynamics.models import RevMLP
from dynamics.schedules import every


def write(path, *, depth, steps, checkpoint_every, optimizer):
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(12, 6, generator=g, dtype=torch.float64), torch.arange(12) % 3
    model = RevMLP(6, 6, depth, 3, seed=0, dtype=torch.float64)
    with Recorder(path, model, probe=(x, y), config={"optimizer": optimizer, "seed": 0},
                  schedule=every(checkpoint_every)) as rec:
        for step in range(steps):
            rec.log(step, loss=1.0 / (step + 1))
            rec.checkpoint(step, train_loss=2.0 / (step + 1))
    return path


def no_integer_fill(ds):
    """Every integer variable of ``ds`` holds no int64 minimum (xarray's integer fill); returns their names."""
    names = []
    for name, var in {**ds.coords, **ds.data_vars}.items():
        if var.dtype.kind in "iu":
            assert not (var.values == np.iinfo(var.dtype).min).any(), name
            names.append(name)
    return names


def test_different_lengths_schedules_and_parameters(tmp_path):
    stores = [write(tmp_path / "sgd.zarr", depth=2, steps=11, checkpoint_every=5, optimizer="sgd"),     # 3 checkpoints
              write(tmp_path / "adam.zarr", depth=2, steps=22, checkpoint_every=3, optimizer="adam"),   # 8 checkpoints
              write(tmp_path / "gn.zarr", depth=3, steps=4, checkpoint_every=1, optimizer="gn")]        # 4, other params
    ds = open_runs(stores)
    assert sorted(no_integer_fill(ds)) == ["checkpoint", "ntk_mode", "seed", "step"]
    steps = ds["checkpoint_step"]
    assert steps.dtype == np.float64
    np.testing.assert_array_equal(steps.sel(run="sgd").values, [0, 5, 10] + [np.nan] * 5)
    np.testing.assert_array_equal(steps.sel(run="adam").values, [0, 3, 6, 9, 12, 15, 18, 21])
    np.testing.assert_array_equal(steps.sel(run="gn").values, [0, 1, 2, 3] + [np.nan] * 4)
    # a parameter only the deeper model has: NaN for the others, never a sentinel
    only_gn = [p for p in ds["param"].values if np.isnan(ds["weight_init_norm"].sel(run="sgd", param=p))]
    assert only_gn and all(np.isfinite(ds["weight_init_norm"].sel(run="gn", param=p)) for p in only_gn)
    np.testing.assert_array_equal(ds["loss"].sel(run="gn").values[:4], 1.0 / np.arange(1, 5))
    assert np.isnan(ds["loss"].sel(run="gn").values[4:]).all()
