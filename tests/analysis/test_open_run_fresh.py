"""``dynamics.open_run`` and a store's derived data (issue 14 case 6, issue 22 §1).

A resume or truncation removes the store's analysis group before the committed data change, so no
reader — plain xarray included — meets an analysis of other data. An analysis that is stale anyway (a
restored backup, a group copied from another store, written by an older version) is left out by
``open_run`` with a StaleAnalysisWarning while the training data open; ``analysis="require"`` raises
instead; ``analysis="omit"`` opens the training data alone. Stores are real, written by
``dynamics.Recorder`` (tests/analysis/fresh_runs.py)."""

import json
import shutil
import warnings

import numpy as np
import pytest
import xarray as xr

from analysis import analyze
from dynamics import open_run
from dynamics.errors import StaleAnalysisWarning, StoreError
from fresh_runs import open_recorder, record, resume_keeping_stale_analysis, train_steps, write_legacy_analysis


def resume_to(store, stop, *, truncate=None, start=None, shift=0.0):
    rec, model = open_recorder(store, resume=True)
    with rec:
        if truncate is not None:
            rec.truncate(truncate)
        train_steps(rec, model, rec.checkpoint_steps[-1] if start is None else start, stop, shift=shift)


@pytest.fixture
def analysed(tmp_path):
    store = record(tmp_path / "sgd.zarr", 0, 10)   # checkpoints at steps 0, 5, 10
    analyze(store, probe_checkpoints="none")
    return store


def plain_readers_see_no_analysis(store):
    tree = xr.open_datatree(store, engine="zarr")          # consolidated metadata
    assert "analysis" not in tree.children and tree["checkpoints"].sizes["checkpoint"] == 6
    for consolidated in (True, False, None):
        with pytest.raises((FileNotFoundError, KeyError, OSError)):
            xr.open_zarr(store, group="analysis", consolidated=consolidated)


def test_fresh_analysis_is_served(analysed):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tree = open_run(analysed, analysis="require")
    stored = tree["analysis"].to_dataset()
    with xr.open_zarr(analysed, group="checkpoints", consolidated=False) as raw:
        np.testing.assert_array_equal(stored["checkpoint_step"].values, raw["checkpoint_step"].values)


def test_a_resume_removes_the_analysis_before_the_data_change(analysed):
    assert xr.open_datatree(analysed, engine="zarr")["analysis"].sizes["checkpoint"] == 3
    resume_to(analysed, 25)
    plain_readers_see_no_analysis(analysed)
    assert not list(analysed.parent.glob(".*.tmp"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tree = open_run(analysed)
    assert "analysis" not in tree.children and tree["checkpoints"].sizes["checkpoint"] == 6
    with pytest.raises(StoreError, match=f"store {analysed} has no analysis group; compute it"):
        open_run(analysed, analysis="require")
    analyze(analysed, probe_checkpoints="none")   # recomputed: served again, with the new length
    assert open_run(analysed, analysis="require")["analysis"].sizes["checkpoint"] == 6


def test_a_truncation_that_drops_rows_removes_it_and_one_that_drops_nothing_keeps_it(tmp_path):
    store = record(tmp_path / "sgd.zarr", 0, 20)
    analyze(store, probe_checkpoints="none")
    rec, _ = open_recorder(store, resume=True)
    with rec:
        rec.truncate(20)   # nothing after step 20: the data stay, and so does their analysis
    assert open_run(store, analysis="require")["analysis"].sizes["checkpoint"] == 5
    rec, _ = open_recorder(store, resume=True)
    with rec:
        rec.truncate(9)
    assert not (store / "analysis").exists()
    assert "analysis" not in xr.open_datatree(store, engine="zarr").children


def test_a_stale_analysis_is_left_out_with_a_warning_and_require_raises(analysed):
    resume_keeping_stale_analysis(analysed, lambda: resume_to(analysed, 25))
    with pytest.warns(StaleAnalysisWarning, match="out of date .*computed from 3 checkpoints and 10 metrics rows; "
                                                  "the store now holds 6 and 25.*left out"):
        tree = open_run(analysed)
    assert "analysis" not in tree.children and tree["checkpoints"].sizes["checkpoint"] == 6
    with pytest.raises(StoreError, match="out of date .*analysis=\"omit\""):
        open_run(analysed, analysis="require")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "analysis" not in open_run(analysed, analysis="omit").children


def test_an_analysis_copied_from_another_run_with_the_same_mark_is_stale(tmp_path):
    one, other = record(tmp_path / "one.zarr", 0, 10), record(tmp_path / "other.zarr", 0, 10, shift=0.05)
    analyze(other, probe_checkpoints="none")
    shutil.copytree(other / "analysis", one / "analysis")
    with pytest.warns(StaleAnalysisWarning, match="same length, other content"):
        assert "analysis" not in open_run(one).children
    with pytest.raises(StoreError, match="same length, other content"):
        open_run(one, analysis="require")


def test_analysis_without_a_token_is_stale(tmp_path):
    store = write_legacy_analysis(tmp_path / "sgd.zarr")
    with pytest.warns(StaleAnalysisWarning, match="records no source token"):
        assert "analysis" not in open_run(store).children
    with pytest.raises(StoreError, match="records no source token"):
        open_run(store, analysis="require")


def test_damaged_analysis_metadata_is_named(analysed):
    (analysed / "analysis" / "zarr.json").write_text('{"zarr_format": 3, "node_')
    with pytest.raises(StoreError, match=f"store {analysed}: group analysis cannot be opened .*{analysed}/analysis"):
        open_run(analysed)
    assert "analysis" not in open_run(analysed, analysis="omit").children


def test_bad_mode(analysed):
    with pytest.raises(ValueError, match="'stale'"):
        open_run(analysed, analysis="stale")


def test_sweep_reader_leaves_a_stale_analysis_out_with_a_warning(analysed):
    from analysis.sweep import run_dataset
    assert "ntk_alignment_init" in run_dataset(analysed).variables   # fresh: included
    resume_keeping_stale_analysis(analysed, lambda: resume_to(analysed, 25))
    with pytest.warns(RuntimeWarning, match="analysis group is out of date or unreadable"):
        ds = run_dataset(analysed)
    assert "ntk_alignment_init" not in ds.variables and ds.sizes["checkpoint"] == 6


def test_truncated_and_rewritten_run_keeps_its_mark_and_loses_its_analysis(tmp_path):
    store = record(tmp_path / "sgd.zarr", 0, 20)
    analyze(store, probe_checkpoints="none")
    before = json.loads(json.loads((store / "zarr.json").read_text())["attributes"]["committed"])
    resume_to(store, 20, truncate=9, start=10, shift=0.05)
    assert json.loads(json.loads((store / "zarr.json").read_text())["attributes"]["committed"]) == before
    assert "analysis" not in open_run(store).children and not (store / "analysis").exists()
