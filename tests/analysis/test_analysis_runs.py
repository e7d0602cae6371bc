"""open_runs, cka_between and analyze_experiment over several Recorder-written stores."""

import json

import numpy as np
import pytest
import xarray as xr

from analysis import analyze_experiment, cka_between, open_runs
from analysis_runs_fixture import write_run
from analysis_textbook import linear_cka_textbook


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("experiment")
    write_run(folder / "sgd-seed0.zarr", optimizer="sgd", seed=0, steps=20, checkpoint_every=10)
    write_run(folder / "sgd-seed1.zarr", optimizer="sgd", seed=1, steps=20, checkpoint_every=10)
    write_run(folder / "adam.zarr", optimizer="adam", seed=0, steps=10, checkpoint_every=5, lr=0.01)
    return folder


@pytest.fixture(scope="module")
def combined(experiment):
    return analyze_experiment(experiment, probe_checkpoints="last")


def test_runs_are_labelled_and_padded(combined):
    assert list(combined["run"].values) == ["adam", "sgd-seed0", "sgd-seed1"]  # sorted store names
    assert list(combined["optimizer"].values) == ["adam", "sgd", "sgd"]
    assert list(combined["seed"].values) == [0, 0, 1]
    assert list(combined["label"].values) == list(combined["run"].values)
    assert combined.sizes["step"] == 20 and combined.sizes["checkpoint"] == 3
    # adam ran 10 steps with checkpoints at 0, 5, 10; the sgd runs 20 steps at 0, 10, 20
    assert np.isnan(combined["loss"].sel(run="adam").values[10:]).all()
    np.testing.assert_array_equal(combined["checkpoint_step"].sel(run="adam").values, [0, 5, 10])
    np.testing.assert_array_equal(combined["checkpoint_step"].sel(run="sgd-seed1").values, [0, 10, 20])
    assert combined["cka_init"].dims == ("run", "checkpoint", "layer")
    assert set(json.loads(combined.attrs["configs"])) == {"adam", "sgd-seed0", "sgd-seed1"}


def test_combined_values_equal_the_per_run_analyses(experiment, combined):
    single = xr.open_zarr(experiment / "sgd-seed1.zarr", group="analysis").load()
    np.testing.assert_allclose(combined["cka_init"].sel(run="sgd-seed1").values, single["cka_init"].values)
    np.testing.assert_allclose(combined["own_change"].sel(run="sgd-seed1").values, single["own_change"].values)


def test_cka_between_matches_textbook_on_stored_representations(experiment, combined):
    between = combined["cka_between"]
    assert between.dims == ("run", "run_", "checkpoint", "layer")
    reps = {label: xr.open_zarr(experiment / f"{label}.zarr", group="checkpoints")["rep_blocks__1"].values
            for label in ("adam", "sgd-seed0", "sgd-seed1")}
    for i in ("adam", "sgd-seed0", "sgd-seed1"):
        for j in ("adam", "sgd-seed0", "sgd-seed1"):
            for c in range(3):
                expected = linear_cka_textbook(reps[i][c], reps[j][c])
                assert between.sel(run=i, run_=j, layer="blocks__1")[c] == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(between.values, between.transpose("run_", "run", "checkpoint", "layer").values)


def test_experiment_store_reads_back_and_round_trips(experiment, combined):
    stored = xr.open_zarr(experiment / "analysis.zarr").load()
    xr.testing.assert_allclose(stored, combined)
    again = open_runs(sorted(experiment.glob("*-seed*.zarr")), compute_missing=False)
    assert list(again["run"].values) == ["sgd-seed0", "sgd-seed1"]


def test_open_runs_analyses_missing_stores_unless_told_not_to(tmp_path):
    store = write_run(tmp_path / "one.zarr", steps=4, checkpoint_every=2, ntk=False)
    with pytest.raises(ValueError, match="no analysis group"):
        open_runs([store], compute_missing=False)
    ds = open_runs(store)
    assert list(ds["run"].values) == ["sgd"] and ds["cka_between"].shape == (1, 1, 3, 2)
    np.testing.assert_allclose(ds["cka_between"].values, 1.0)


def test_different_probe_sets_give_nan_with_warning(tmp_path):
    a = write_run(tmp_path / "a.zarr", steps=4, checkpoint_every=2, ntk=False)
    b = write_run(tmp_path / "b.zarr", steps=4, checkpoint_every=2, ntk=False, probe_size=20)
    with pytest.warns(RuntimeWarning, match="different probe inputs"):
        between = cka_between([a, b], labels=["a", "b"])
    assert np.isnan(between.sel(run="a", run_="b").values).all()
    np.testing.assert_allclose(between.sel(run="a", run_="a").values, 1.0)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        open_runs([])
    with pytest.raises(ValueError, match="no run stores"):
        analyze_experiment(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        analyze_experiment(tmp_path / "nope")
