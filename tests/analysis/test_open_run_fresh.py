"""``dynamics.open_run`` serves a stored analysis only when it was computed from the store's current
data (issue 14, leftover of case 6): a stale one raises StoreError naming why, like
``analysis.open_runs(..., compute_missing=False)``; ``analysis="omit"`` opens the training data alone.
Stores are real, written by ``dynamics.Recorder`` (tests/analysis/fresh_runs.py)."""

import json

import numpy as np
import pytest
import xarray as xr

from analysis import analyze
from dynamics import open_run
from dynamics.errors import StoreError
from fresh_runs import open_recorder, record, train_steps, write_legacy_analysis


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


def test_fresh_analysis_is_served(analysed):
    tree = open_run(analysed)
    stored = tree["analysis"].to_dataset()
    with xr.open_zarr(analysed, group="checkpoints", consolidated=False) as raw:
        np.testing.assert_array_equal(stored["checkpoint_step"].values, raw["checkpoint_step"].values)


def test_resumed_run_raises_and_omit_opens_the_training_data(analysed):
    resume_to(analysed, 25)
    with pytest.raises(StoreError, match="out of date .*computed from 3 checkpoints and 10 metrics rows; the "
                                         "store now holds 6 and 25.*analysis=\"omit\""):
        open_run(analysed)
    tree = open_run(analysed, analysis="omit")
    assert "analysis" not in tree.children and tree["checkpoints"].sizes["checkpoint"] == 6
    analyze(analysed, probe_checkpoints="none")   # recomputed: served again, with the new length
    assert open_run(analysed)["analysis"].sizes["checkpoint"] == 6


def test_truncated_and_rewritten_run_with_the_same_mark_raises(tmp_path):
    store = record(tmp_path / "sgd.zarr", 0, 20)
    analyze(store, probe_checkpoints="none")
    before = json.loads(json.loads((store / "zarr.json").read_text())["attributes"]["committed"])
    resume_to(store, 20, truncate=9, start=10, shift=0.05)
    assert json.loads(json.loads((store / "zarr.json").read_text())["attributes"]["committed"]) == before
    with pytest.raises(StoreError, match="same length, other content"):
        open_run(store)


def test_analysis_without_a_token_raises(tmp_path):
    store = write_legacy_analysis(tmp_path / "sgd.zarr")
    with pytest.raises(StoreError, match="records no source token"):
        open_run(store)
    assert "analysis" not in open_run(store, analysis="omit").children


def test_bad_mode(analysed):
    with pytest.raises(ValueError, match="'stale'"):
        open_run(analysed, analysis="stale")


def test_sweep_reader_leaves_a_stale_analysis_out_with_a_warning(analysed):
    from analysis.sweep import run_dataset
    assert "ntk_alignment_init" in run_dataset(analysed).variables   # fresh: included
    resume_to(analysed, 25)
    with pytest.warns(RuntimeWarning, match="analysis group is out of date or unreadable"):
        ds = run_dataset(analysed)
    assert "ntk_alignment_init" not in ds.variables and ds.sizes["checkpoint"] == 6
