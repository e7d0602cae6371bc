"""Results across a sweep: ``analysis.open_sweep`` against each run's own store, NaN for failed and
missing runs, the sweep report and the ``analyze``/``report`` dispatch of the command line.

The sweep folder is made without a cluster: the runs of the plan are trained one after another in
this process and the manifest is written from their stores, as ``dynamics sweep`` does."""

import json
import re

import numpy as np
import pytest

import dynamics
from analysis.run_analysis import analyze
from analysis.sweep import final, open_sweep
from dynamics.sweep_manifest import write_manifest
from trainers.loop import train
from trainers.sweep import build_manifest
from trainers.sweep_plan import plan_sweep

SWEEP = """preset = "digits"
name = "results"
[data]
n_train = 160
n_test = 60
probe_size = 12
[model]
hidden = 16
depth = 2
[train]
optimizers = ["gn", "adam"]
steps = 6
batch_size = 16
checkpoints = 3
[sweep]
"optimizers.gn.lr" = [0.05, 0.1]
"train.seed" = [0, 1]
"optimizers.adam.lr" = [0.001, 1e300]
"""
FAILED = {"adam_seed-0_lr-1e+300", "adam_seed-1_lr-1e+300"}
MISSING = "gn_lr-0.1_seed-1"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    (root / "sweep.toml").write_text(SWEEP)
    plan = plan_sweep(root / "sweep.toml")
    out = root / "out"
    for name, spec in plan.runs.items():
        if name == MISSING:
            continue
        store = out / "runs" / f"{name}.zarr"
        try:
            train(spec.config, spec.optimizer, store, progress=False)
        except ValueError:
            assert name in FAILED
            continue
        analyze(store, probe_checkpoints="none")
    manifest = build_manifest(plan, out, None)
    for name in FAILED:
        manifest["runs"][name].update(status="failed", failures=1, error="ConfigError: diverged")
    write_manifest(out, manifest)
    return out


def test_dims_are_the_swept_keys_and_optimizer(folder):
    ds = open_sweep(folder)
    assert ds["test_acc"].dims == ("optimizers.gn.lr", "train.seed", "optimizers.adam.lr", "optimizer", "checkpoint")
    assert ds["loss"].dims[:4] == ("optimizers.gn.lr", "train.seed", "optimizers.adam.lr", "optimizer")
    assert ds["optimizers.gn.lr"].values.tolist() == [0.05, 0.1]
    assert ds["optimizers.adam.lr"].values.tolist() == [0.001, 1e300]
    assert ds["optimizer"].values.tolist() == ["gn", "adam"]
    assert ds["loss"].chunks is not None   # lazy (dask)
    assert {"ntk_alignment_init", "cka_init", "own_change", "checkpoint_step", "run", "status"} <= set(ds.variables)


def test_values_equal_each_runs_own_store(folder):
    ds = open_sweep(folder)
    manifest = json.loads((folder / "sweep.json").read_text())
    checked = 0
    for point in manifest["points"]:
        for optimizer, name in point["runs"].items():
            cell = ds.sel(**point["values"], optimizer=optimizer)
            assert str(cell["run"].values) == name
            if name in FAILED or name == MISSING:
                assert np.isnan(cell["loss"].values).all() and np.isnan(cell["test_acc"].values).all()
                assert np.isnan(cell["ntk_alignment_init"].values).all()
                continue
            tree = dynamics.open_run(folder / "runs" / f"{name}.zarr")
            np.testing.assert_array_equal(cell["loss"].values, tree["metrics"]["loss"].values)
            np.testing.assert_array_equal(cell["test_acc"].values, tree["checkpoints"]["test_acc"].values)
            np.testing.assert_array_equal(cell["checkpoint_step"].values, tree["checkpoints"]["checkpoint_step"].values)
            np.testing.assert_array_equal(cell["cka_init"].values, tree["analysis"]["cka_init"].values)
            checked += 1
    assert checked == 2 * 4 + 1 * 2 * 2 - 2   # gn at 4 points but one missing; adam lr 1e-3 at every point
    # Adam does not depend on the GN learning rate: the same run at both values
    adam = ds["test_acc"].sel(optimizer="adam", **{"optimizers.adam.lr": 0.001})
    np.testing.assert_array_equal(adam.isel({"optimizers.gn.lr": 0}).values, adam.isel({"optimizers.gn.lr": 1}).values)


def test_final_is_the_last_value_with_data():
    import xarray as xr
    values = xr.DataArray([[1.0, 2.0, np.nan], [np.nan, np.nan, np.nan], [4.0, np.nan, 6.0]], dims=("run", "checkpoint"))
    np.testing.assert_array_equal(final(values).values, [2.0, np.nan, 6.0])


def test_open_sweep_of_a_plain_folder_says_so(tmp_path):
    with pytest.raises(ValueError, match="not a sweep folder"):
        open_sweep(tmp_path)


def test_report_via_the_command_line(folder, capsys):
    from dynamics.cli import main
    assert main(["report", str(folder)]) == 0
    path = folder / "report.html"
    assert capsys.readouterr().out.strip() == str(path)
    text = path.read_text()
    figures = re.findall(r"<figure id=\"key-\d\">", text)
    assert len(figures) == 2   # one per swept key other than the seed
    assert "Final metrics against optimizers.gn.lr" in text and "Final metrics against optimizers.adam.lr" in text
    assert "adam_seed-0_lr-1e+300" in text and "Failed runs" in text
    assert text.count("<tr>") >= 2 * 2 * 2 + 1


@pytest.mark.slow
def test_analyze_a_sweep_on_the_cluster(folder, capsys):
    from dynamics.cli import main
    stamp = {p: (p / "analysis" / "zarr.json").stat().st_mtime_ns for p in (folder / "runs").glob("*.zarr")
             if (p / "analysis" / "zarr.json").is_file()}
    assert main(["analyze", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == str(folder / "sweep.json")
    for store, before in stamp.items():
        assert (store / "analysis" / "zarr.json").stat().st_mtime_ns > before


def test_no_integer_fill_value_in_the_sweep(folder):
    """Missing and failed runs are NaN: no integer variable holds xarray's int64 fill (issue 15 §4)."""
    ds = open_sweep(folder).load()
    ints = []
    for name, variable in {**ds.coords, **ds.data_vars}.items():
        if variable.dtype.kind in "iu":
            assert not (variable.values == np.iinfo(variable.dtype).min).any(), name
            ints.append(name)
    assert set(ints) <= {"checkpoint", "step", "train.seed", "ntk_mode"}   # index coordinates, never filled
    steps = ds["checkpoint_step"].sel(optimizer="gn")
    assert steps.dtype == np.float64 and np.isnan(steps.sel({"optimizers.gn.lr": 0.1, "train.seed": 1})).all()
