"""A store that explains itself (issue 15 §4): every variable of a real run store written by
``dynamics train`` — metrics, checkpoints (NTK, representations), params, probe — and of its analysis
(the run's ``analysis`` group and the experiment's ``analysis.zarr``) carries non-empty ``long_name``,
``units`` and ``description`` attributes, read back from disk with zarr and with plain xarray; the root
holds optimizer, seed and preset beside the JSON config; the probe set keeps the positions of its
samples in the data set (checked against the data set loaded independently)."""

import json
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from analysis import analyze, analyze_experiment
from dynamics import Recorder
from dynamics.cli import main
from dynamics.models import MLP
from trainers.data import load_dataset

TINY = """preset = "digits"
name = "tiny"
[data]
n_train = 160
n_test = 60
probe_size = 24
split_seed = 3
[model]
hidden = 12
depth = 2
[train]
optimizers = ["gn", "sgd"]
steps = 6
batch_size = 16
checkpoints = 3
seed = 5
"""
CF = ("long_name", "units", "description")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exp")
    (folder / "tiny.toml").write_text(TINY)
    for optimizer in ("gn", "sgd"):
        assert main(["train", "--optimizer", optimizer, "--config", str(folder / "tiny.toml"),
                     "--out", str(folder / f"{optimizer}.zarr"), "--quiet"]) == 0
    analyze_experiment(folder, probe_checkpoints="last")   # each store's analysis group + analysis.zarr
    return folder


def every_array(path):
    """(group/name, attributes) of every array below the zarr store ``path``, read with zarr itself."""
    out = {}
    with warnings.catch_warnings():   # the store's lock and resume/ folder are not zarr nodes
        warnings.filterwarnings("ignore", message=r"Object at .* is not recognized")
        root = zarr.open_group(str(path), mode="r", use_consolidated=False)
        for name, array in root.arrays():
            out[name] = dict(array.attrs)
        for group_name, group in root.groups():
            for name, array in group.arrays():
                out[f"{group_name}/{name}"] = dict(array.attrs)
    return out


def assert_explained(arrays):
    assert arrays
    missing = {key: [a for a in CF if not (isinstance(attrs.get(a), str) and attrs[a].strip())]
               for key, attrs in arrays.items()}
    assert {key: m for key, m in missing.items() if m} == {}


def test_every_variable_of_a_run_store_and_its_analysis_is_explained(experiment):
    arrays = every_array(experiment / "gn.zarr")
    groups = {key.split("/")[0] for key in arrays}
    assert groups == {"metrics", "checkpoints", "params", "probe", "analysis"}
    for expected in ("metrics/time", "metrics/gn_residual", "checkpoints/ntk", "checkpoints/checkpoint_step",
                     "probe/probe_index", "analysis/checkpoint_step", "analysis/weight_rel_change"):
        assert expected in arrays
    assert any(key.startswith("checkpoints/rep_") for key in arrays)
    assert any(key.startswith("params/") and key.endswith("weight") for key in arrays)
    assert_explained(arrays)
    assert arrays["metrics/time"]["units"] == "s" and "perf_counter" in arrays["metrics/time"]["description"]
    assert_explained(every_array(experiment / "analysis.zarr"))


def test_plain_xarray_shows_the_attributes(experiment):
    tree = xr.open_datatree(experiment / "sgd.zarr", engine="zarr")
    for node in tree.subtree:
        for name, variable in node.to_dataset().variables.items():
            if node.path == "/":
                continue
            for attr in CF:
                assert variable.attrs.get(attr), (node.path, name, attr)
    assert tree["metrics"]["time"].dtype == np.float64   # units "s" is not decoded to a timedelta
    with xr.open_zarr(experiment / "analysis.zarr") as combined:
        for name, variable in combined.variables.items():
            assert all(variable.attrs.get(a) for a in CF), name


def test_root_identity_attributes(experiment):
    for optimizer in ("gn", "sgd"):
        attrs = json.loads((experiment / f"{optimizer}.zarr" / "zarr.json").read_text())["attributes"]
        config = json.loads(attrs["config"])
        assert (attrs["optimizer"], attrs["seed"], attrs["preset"]) == (optimizer, 5, "digits")
        assert (config["optimizer"], config["seed"], config["preset"]) == (optimizer, 5, "digits")


def test_probe_index_points_at_the_probe_samples(experiment):
    with xr.open_zarr(experiment / "gn.zarr", group="probe") as probe:
        index, x, y = probe["probe_index"].values, probe["x"].values, probe["y"].values
    data = load_dataset("digits", n_train=160, n_test=60, split_seed=3)   # the data set, loaded on its own
    assert index.dtype == np.int64 and index.shape == (24,) and len(set(index.tolist())) == 24
    np.testing.assert_array_equal(x, data.x_train[index].astype(x.dtype))
    np.testing.assert_array_equal(y, data.y_train[index])


def test_names_the_registry_does_not_know_get_a_generic_entry(tmp_path):
    model = MLP(4, 6, 1, 2, seed=0)
    x, y = torch.randn(8, 4), torch.arange(8) % 2
    with Recorder(tmp_path / "r.zarr", model, (x, y), config={"optimizer": {"name": "mine"}},
                  probe_index=[7, 6, 5, 4, 3, 2, 1, 0]) as rec:
        rec.log(0, my_metric=1.0)
        rec.checkpoint(0, my_score=2.0)
    arrays = every_array(tmp_path / "r.zarr")
    assert_explained(arrays)
    assert "my_metric" in arrays["metrics/my_metric"]["description"]
    assert "my_score" in arrays["checkpoints/my_score"]["description"]
    attrs = json.loads((tmp_path / "r.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs["optimizer"] == "mine" and "seed" not in attrs and "preset" not in attrs
    analyze(tmp_path / "r.zarr", probe_checkpoints="none")
    assert_explained(every_array(tmp_path / "r.zarr"))


def test_bad_probe_index(tmp_path):
    model = MLP(4, 6, 1, 2, seed=0)
    x, y = torch.randn(8, 4), torch.arange(8) % 2
    with pytest.raises(ValueError, match=r"probe_index must have shape \(8,\)"):
        Recorder(tmp_path / "a.zarr", model, (x, y), probe_index=np.arange(7))
    with pytest.raises(ValueError, match="probe_index must be >= 0, got -1"):
        Recorder(tmp_path / "b.zarr", model, (x, y), probe_index=np.arange(8) - 1)
    with pytest.raises(TypeError, match="probe_index must hold integers"):
        Recorder(tmp_path / "c.zarr", model, (x, y), probe_index=np.zeros(8))
    assert not any(tmp_path.iterdir())
