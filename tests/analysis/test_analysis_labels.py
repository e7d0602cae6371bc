"""Run labels are unique by construction (issue 21 item 2): every place a run is labelled goes through
analysis.labels, so runs are never merged — same optimiser and seed in different folders keep both
configs, and sel(run=...) picks exactly one run."""

import json
import os

import numpy as np
import pytest
import xarray as xr

from analysis import open_runs
from analysis.labels import path_suffixes, run_labels, unique_labels
from analysis_runs_fixture import write_run


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """Two SGD seed-0 runs in different folders, with different learning rates, same store name."""
    root = tmp_path_factory.mktemp("twins")
    a = write_run(root / "a" / "gn.zarr", optimizer="sgd", seed=0, steps=4, checkpoint_every=2, lr=0.1, ntk=False,
                  config_extra={"lr": 0.1})
    b = write_run(root / "b" / "gn.zarr", optimizer="sgd", seed=0, steps=4, checkpoint_every=2, lr=0.05, ntk=False,
                  config_extra={"lr": 0.05})
    return a, b


def test_same_optimizer_and_seed_in_two_folders_stay_two_runs(twins):
    a, b = twins
    ds = open_runs([a, b])
    labels = list(ds["run"].values)
    assert labels == ["sgd-seed0 (a/gn)", "sgd-seed0 (b/gn)"]
    configs = json.loads(ds.attrs["configs"])
    assert len(configs) == 2 and sorted(c["lr"] for c in configs.values()) == [0.05, 0.1]   # no lr is lost
    for label, store in zip(labels, (a, b)):
        stored = json.loads(json.loads((store / "zarr.json").read_text())["attributes"]["config"])
        assert configs[label] == stored
        one = ds.sel(run=label)
        assert "run" not in one.dims          # exactly one run, not two
        loss = xr.open_zarr(store, group="metrics")["loss"].values
        np.testing.assert_array_equal(one["loss"].values[:loss.size], loss)
    assert ds["loss"].sel(run=labels[0]).values.tolist() != ds["loss"].sel(run=labels[1]).values.tolist()


def test_report_run_table_labels_are_the_analysis_labels(twins, tmp_path):
    from reports.experiment import store_infos

    a, b = twins
    infos = store_infos([a, b])
    assert [i.label for i in infos] == list(open_runs([a, b])["run"].values)
    assert [i.config["model"] for i in infos] == [json.loads(json.loads((s / "zarr.json").read_text())
                                                            ["attributes"]["config"])["model"] for s in (a, b)]


def test_the_same_store_twice_is_refused(twins, tmp_path):
    a, _ = twins
    link = tmp_path / "link.zarr"
    os.symlink(a, link)
    for given in ([a, a], [a, link], [a, a.parent / ".." / "a" / "gn.zarr"]):
        with pytest.raises(ValueError, match="same store"):
            open_runs(given)


def test_label_rule():
    assert run_labels([("gn", 0), ("sgd", 0)], [None, None]) == ["gn", "sgd"]
    assert run_labels([("gn", 0), ("gn", 1)], ["x/a.zarr", "x/b.zarr"]) == ["gn-seed0", "gn-seed1"]
    # same optimiser and seed: the shortest path suffix that tells them apart
    assert run_labels([("gn", 0), ("gn", 0)], ["x/gn.zarr", "y/gn2.zarr"]) == ["gn-seed0 (gn)", "gn-seed0 (gn2)"]
    assert run_labels([("gn", 0), ("gn", 0), ("adam", 0)], ["r/x/gn.zarr", "r/y/gn.zarr", "r/x/adam.zarr"]) == \
        ["gn-seed0 (x/gn)", "gn-seed0 (y/gn)", "adam"]
    # unknown seeds (-1) are left out of the name
    assert run_labels([("run", -1), ("run", -1)], ["p/q.zarr", "p/r.zarr"]) == ["run (q)", "run (r)"]
    # a name that equals another's disambiguated label still gives distinct labels
    labels = unique_labels(["a", "a", "a (x)"], ["x.zarr", "y.zarr", "z.zarr"])
    assert len(set(labels)) == 3
    with pytest.raises(ValueError, match="store path"):
        unique_labels(["gn", "gn"], [None, None])
    assert path_suffixes(["/r/a/x", "/r/b/x"]) == ["a/x", "b/x"]
    assert path_suffixes(["/r/a/x.zarr", "/r/a/x"]) == ["/r/a/x.zarr", "/r/a/x"]
