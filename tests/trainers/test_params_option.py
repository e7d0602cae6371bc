"""``train.params`` (config key, ``--set``) reaches the Recorder, and a resume keeps it (issue 15 §4)."""

import json

import numpy as np
import xarray as xr

from dynamics.cli import main

TINY = """preset = "digits"
name = "tiny"
[data]
n_train = 160
n_test = 60
probe_size = 32
[model]
hidden = 16
depth = 2
[train]
optimizers = ["adam"]
steps = 12
batch_size = 16
checkpoints = 4
"""


def test_set_train_params_first_last_and_resume(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "adam.zarr"
    args = ["train", "--optimizer", "adam", "--config", str(config), "--out", str(out), "--quiet",
            "--set", "train.params=first_last"]
    assert main(args) == 0
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]
    assert attrs["params"] == "first_last" and json.loads(attrs["config"])["train"]["params"] == "first_last"
    with xr.open_zarr(out, group="params") as ds:
        weights = [ds[v].values for v in ds.data_vars if v.endswith("weight")]
        n = ds.sizes["checkpoint"]
    assert weights and n == 4
    for w in weights:
        assert np.isfinite(w[[0, -1]]).all() and np.isnan(w[1:-1]).all()
    # resuming with another mode is the config-differs error (one line, exit 2), the store untouched
    assert main(args[:-1] + ["train.params=all", "--resume"]) == 2
    assert "params" in capsys.readouterr().err
    assert json.loads((out / "zarr.json").read_text())["attributes"]["status"] == "complete"


def test_bad_value_is_one_line(tmp_path, capsys):
    assert main(["config", "show", "--set", "train.params=some"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.params" in err and "first_last" in err
