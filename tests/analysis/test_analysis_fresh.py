"""An analysis is served only when it was computed from the store's current data (issue 14 case 6), and
an interrupted rewrite of it never leaves a run that cannot be opened, analysed or reported (case 7).

Stores are written by ``dynamics.Recorder`` (tests/analysis/fresh_runs.py); expected values are read
from the raw store with plain xarray and recomputed with textbook formulas.
"""

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import xarray as xr

from analysis import analyze, analyze_experiment, open_runs
from analysis.freshness import analysis_token, source_token
from analysis.runs import experiment_analysis_is_fresh
from analysis.store_io import _aside, read_analysis_group, rewrite_root
from analysis_textbook import linear_cka_textbook
from dynamics import open_run
from dynamics.errors import StaleAnalysisWarning, StoreError
from fresh_runs import open_recorder, record, resume_keeping_stale_analysis, train_steps, write_legacy_analysis


def raw(store, group):
    with xr.open_zarr(store, group=group, consolidated=False) as ds:
        return ds.load()


def committed(store):
    return json.loads(json.loads((store / "zarr.json").read_text())["attributes"]["committed"])


def resume_to(store, stop, **options):
    rec, model = open_recorder(store, resume=True)
    with rec:
        if "truncate" in options:
            rec.truncate(options["truncate"])
        train_steps(rec, model, options.get("start", rec.checkpoint_steps[-1]), stop, shift=options.get("shift", 0.0))


def expect_current(store, ds):
    """``ds`` (one run, or one run of a combined Dataset) holds the analysis of the store as it is now."""
    checkpoints = raw(store, "checkpoints")
    n = checkpoints.sizes["checkpoint"]
    assert ds.sizes["checkpoint"] == n
    np.testing.assert_array_equal(ds["checkpoint_step"].values, checkpoints["checkpoint_step"].values)
    np.testing.assert_allclose(ds["train_loss"].values, checkpoints["train_loss"].values, rtol=0, atol=0)
    rep = checkpoints["rep_blocks__1"].values
    expected = linear_cka_textbook(rep[0], rep[-1])
    layer = list(ds["layer"].values).index("blocks__1")
    np.testing.assert_allclose(ds["cka_init"].values[-1, layer], expected, rtol=1e-10)
    metrics = raw(store, "metrics")
    np.testing.assert_allclose(ds["loss"].values, metrics["loss"].values, rtol=0, atol=0)


@pytest.fixture
def three(tmp_path):
    """A store of 3 checkpoints (steps 0, 5, 10) with its analysis written."""
    store = record(tmp_path / "sgd.zarr", 0, 10)
    analyze(store, probe_checkpoints="none")
    return store


# ----------------------------------------------------------------------------- case 6: freshness
def test_resumed_run_is_analysed_again(three):
    resume_to(three, 25)  # 6 checkpoints now; the resume removed the analysis of 3
    with pytest.raises(ValueError, match="no analysis group"):
        open_runs([three], compute_missing=False)
    ds = open_runs([three])
    assert ds["cka_between"].shape == (1, 1, 6, 2)
    expect_current(three, ds.isel(run=0))
    rep = raw(three, "checkpoints")["rep_blocks__0"].values
    np.testing.assert_allclose(ds["cka_between"].values[0, 0, :, 0], [linear_cka_textbook(r, r) for r in rep])
    stored = read_analysis_group(three)  # the stale group was replaced, stamped with the store's token
    assert stored.sizes["checkpoint"] == 6 and json.loads(stored.attrs["source"]) == analysis_token(source_token(three))
    assert open_runs([three], compute_missing=False).sizes["checkpoint"] == 6


def test_resumed_run_with_a_stale_analysis_left_in_place_is_analysed_again(three):
    resume_keeping_stale_analysis(three, lambda: resume_to(three, 25))
    with pytest.raises(ValueError, match="out of date: computed from 3 checkpoints and 10 metrics rows; the store "
                                         "now holds 6 and 25"):
        open_runs([three], compute_missing=False)
    expect_current(three, open_runs([three]).isel(run=0))


def test_truncated_and_rewritten_run_with_the_same_mark_is_analysed_again(tmp_path):
    store = record(tmp_path / "sgd.zarr", 0, 20)
    old = analyze(store, probe_checkpoints="none")
    mark = committed(store)
    resume_keeping_stale_analysis(store, lambda: resume_to(store, 20, truncate=9, start=10, shift=0.05))
    assert committed(store) == mark
    with pytest.raises(ValueError, match="same length, other content"):
        open_runs([store], compute_missing=False)
    ds = open_runs([store]).isel(run=0)
    expect_current(store, ds)
    assert not np.allclose(ds["train_loss"].values[2:], old["train_loss"].values[2:])


def test_analysis_without_a_source_token_is_not_trusted(tmp_path):
    store = write_legacy_analysis(tmp_path / "sgd.zarr")
    with pytest.raises(ValueError, match="records no source token"):
        open_runs([store], compute_missing=False)
    expect_current(store, open_runs([store]).isel(run=0))


def test_experiment_analysis_goes_stale_with_its_stores_and_is_skipped_by_glob(tmp_path):
    folder = tmp_path / "exp"
    record(folder / "sgd.zarr", 0, 10)
    record(folder / "adam.zarr", 0, 5)
    analyze_experiment(folder, probe_checkpoints="none")
    assert experiment_analysis_is_fresh(folder) is True
    from reports.experiment import analysis_is_fresh, load_analysis
    assert analysis_is_fresh(folder)
    everything = open_runs(sorted(folder.glob("*.zarr")), compute_missing=False)  # analysis.zarr is skipped
    assert sorted(everything["run"].values) == ["sgd-seed0 (adam)", "sgd-seed0 (sgd)"]
    resume_to(folder / "adam.zarr", 15)
    assert experiment_analysis_is_fresh(folder) is False and not analysis_is_fresh(folder)
    shutil.copytree(folder / "sgd.zarr", folder / "sgd2.zarr")  # a store added: stale as well
    assert experiment_analysis_is_fresh(folder) is False
    shutil.rmtree(folder / "sgd2.zarr")
    ds = load_analysis(folder)  # recomputed from the resumed store
    assert int(ds["checkpoint"].size) == 4
    assert experiment_analysis_is_fresh(folder) is True


# ------------------------------------------------------------ case 7: interrupted rewrites
def check_opens_analyses_reports(store):
    """The run opens (its analysis, if any, complete), analyses and reports; afterwards the analysis is
    current, the root metadata consolidated and describing it, and no debris is left."""
    with warnings.catch_warnings(record=True) as caught:   # a stale analysis is left out, with a warning
        warnings.simplefilter("always")
        tree = open_run(store)
    stale = [w for w in caught if issubclass(w.category, StaleAnalysisWarning)]
    assert all("analysis group is out of date" in str(w.message) for w in stale)
    assert not stale or "analysis" not in tree.children
    if "analysis" in tree.children:
        assert tree["analysis"].to_dataset().load().sizes["checkpoint"] in (3, 6)
    analyze(store, probe_checkpoints="none")
    expect_current(store, read_analysis_group(store))
    consolidated = xr.open_datatree(store, engine="zarr")  # the root's consolidated metadata agrees
    assert consolidated["analysis"].to_dataset().load().sizes["checkpoint"] == raw(store, "checkpoints").sizes["checkpoint"]
    from reports import write_report
    report = write_report(store)
    assert report.is_file() and report.name == "sgd-report.html"
    assert not list(store.parent.glob(".*.tmp")) and not (store / ".lock").exists()


def test_interrupted_rewrite_of_the_old_kind_is_repaired(three):
    # closes: the root's consolidated metadata describes the 3-checkpoint analysis (as before issue 22)
    resume_keeping_stale_analysis(three, lambda: resume_to(three, 25))
    new = analyze(three, write=False, probe_checkpoints="none")
    new.to_zarr(three, group="analysis", mode="w", consolidated=False, zarr_format=3)  # then Ctrl-C, before consolidating
    meta = json.loads((three / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    assert meta["analysis/train_loss"]["shape"] == [3]  # the state that used to fail with "cannot reshape"
    check_opens_analyses_reports(three)


def test_analysis_group_deleted_under_consolidated_metadata(three):
    shutil.rmtree(three / "analysis")
    check_opens_analyses_reports(three)


@pytest.mark.parametrize("kill_after", ["staged", "unlisted", "moved_aside", "swapped"])
def test_every_step_of_a_rewrite_leaves_a_usable_run(three, kill_after):
    """The states a kill leaves between the steps of ``write_analysis_group``, built with its own steps."""
    resume_keeping_stale_analysis(three, lambda: resume_to(three, 25))
    new = analyze(three, write=False, probe_checkpoints="none")
    staging = _aside(three, "new")
    new.to_zarr(str(staging), mode="w", consolidated=True, zarr_format=3)
    steps = ["staged", "unlisted", "moved_aside", "swapped"]
    if steps.index(kill_after) >= 1:
        rewrite_root(three, with_analysis=False)
    if steps.index(kill_after) >= 2:
        os.rename(three / "analysis", _aside(three, "old"))
    if steps.index(kill_after) >= 3:
        os.rename(staging, three / "analysis")
    check_opens_analyses_reports(three)


def test_an_analysis_of_data_that_changed_meanwhile_is_not_written(three):
    """The token is taken before the data is read and checked again under the lock."""
    from analysis.store_io import write_analysis_group

    token = source_token(three)
    ds = analyze(three, write=False, probe_checkpoints="none")
    resume_to(three, 15)  # the run goes on between reading and writing (and removes the analysis of before)
    assert read_analysis_group(three) is None
    assert write_analysis_group(three, ds, token) is False
    assert read_analysis_group(three) is None
    fresh = analyze(three, probe_checkpoints="none")  # taken and written in one go: written
    xr.testing.assert_allclose(read_analysis_group(three), fresh)
