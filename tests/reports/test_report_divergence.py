"""The report marks a diverged run (issue 21 item 4): a note naming the run, the first step with
non-finite inputs and which inputs, and a dotted line at that step in the figures over training steps.
Labels of same-optimiser same-seed runs stay distinct in the report's run table (item 2)."""

import json
import shutil
import warnings

import numpy as np
import zarr
from synthetic import make_analysis

from real_runs import recorded_run
from reports import figures
from reports.experiment import load_analysis, run_stores, store_infos
from reports.report import runs_html
from reports.runs import divergence_notes

STEP_FIGURES = ("loss_accuracy", "batch_loss_change", "ntk_dynamics", "cka_to_init", "weight_change")


def dotted_lines_at(fig, step):
    return [line for ax in fig.axes for line in ax.get_lines()
            if line.get_linestyle() == ":" and list(line.get_xdata()) == [step, step]]


def test_figures_mark_the_first_non_finite_step():
    ds = make_analysis(optimizers=("gn", "sgd"))
    ds["first_nonfinite_step"] = ("run", [np.nan, 120.0])
    ds.attrs["nonfinite"] = json.dumps({"gn": {"first_step": None}, "sgd": {"first_step": 120, "checkpoints":
                                        {"checkpoints/ntk": [5]}, "steps": {"metrics/loss_after": [120, 399, 280]}}})
    for name in STEP_FIGURES:
        assert dotted_lines_at(getattr(figures, name)(ds), 120.0), name
    notes = divergence_notes(ds)
    assert len(notes) == 1 and notes[0].startswith("sgd: non-finite values (NaN or inf) from step 120")
    assert "checkpoints/ntk" in notes[0] and "metrics/loss_after" in notes[0]
    clean = make_analysis(optimizers=("gn", "sgd"))
    assert not dotted_lines_at(figures.ntk_dynamics(clean), 120.0) and divergence_notes(clean) == []


def test_report_of_a_diverged_run_and_of_twin_runs(tmp_path):
    folder = tmp_path / "exp"
    run = recorded_run(folder / "sgd.zarr", {"optimizer": "sgd", "seed": 0}, steps=7)
    rep = zarr.open_array(str(run / "checkpoints" / "rep_blocks__1"), mode="r+")
    rep[2, 0, 0] = np.inf                               # the last of three checkpoints (step 6)
    twin = tmp_path / "other" / "exp" / "sgd.zarr"       # same optimiser and seed, another folder
    shutil.copytree(recorded_run(tmp_path / "clean" / "sgd.zarr", {"optimizer": "sgd", "seed": 0, "lr": 0.2}),
                    twin)
    shutil.copytree(twin, folder / "sgd-b.zarr")         # and the same in this folder under another name
    with warnings.catch_warnings():   # the run table and notes write_report writes (figures: the test above)
        warnings.simplefilter("ignore", RuntimeWarning)
        page = runs_html(load_analysis(folder), store_infos(run_stores(folder)))
    assert "Non-finite values." in page
    assert "sgd-seed0 (sgd): non-finite values (NaN or inf) from step 6 (checkpoints/rep_blocks__1)" in page
    for label in ("sgd-seed0 (sgd)", "sgd-seed0 (sgd-b)"):   # both runs in the run table, with their status
        assert f"{label}</td><td>sgd</td><td class=\"num\">0</td><td>complete</td>" in page
    assert "lr" in page.split("Configuration (")[1].split("</details>")[0]   # the twin's lr is kept
