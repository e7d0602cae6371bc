"""Notebook use: runs and experiments display themselves (escaped HTML with status, steps, checkpoints, last
metrics and figures), and examples/notebook.ipynb runs top to bottom on a tiny experiment (nbclient, a
real ipykernel)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure
from nbclient import NotebookClient

from reports.experiment import ReportError
from reports.notebook import Experiment, Run
from tiny_runs import train_tiny

ROOT = Path(__file__).resolve().parents[2]


def test_run_and_experiment_show_committed_state_and_figures(tiny_experiment):
    run = Run(tiny_experiment / "sgd.zarr", figures=("loss_accuracy",))
    assert (run.status, run.steps, run.checkpoints) == ("complete", 12, 4)
    metrics = xr.open_zarr(tiny_experiment / "sgd.zarr", group="metrics")
    last = run.last_metrics()
    assert last["loss"] == (12, float(metrics["loss"].values[-1]))
    checkpoints = xr.open_zarr(tiny_experiment / "sgd.zarr", group="checkpoints")
    assert last["test_acc"] == (12, float(checkpoints["test_acc"].values[-1]))
    page = run._repr_html_()
    assert "complete" in page and f"{metrics['loss'].values[-1]:.6g}" in page
    assert page.count('src="data:image/png;base64,') == 1
    experiment = Experiment(tiny_experiment, figures=())
    assert isinstance(experiment.figure("ntk_dynamics"), Figure)   # also leaves the analyses for the notebook test
    page = experiment._repr_html_()
    assert [r.name for r in experiment.runs] == ["adam", "sgd"]
    for name, steps, checkpoints_ in (("adam", 8, 3), ("sgd", 12, 4)):
        assert f"<td>{name}</td>" in page and f'<td class="num">{steps}</td><td class="num">{checkpoints_}</td>' in page
    with pytest.raises(ValueError, match="unknown figure"):
        experiment.figure("nope")
    with pytest.raises(ReportError):
        Run(tiny_experiment)


def test_user_text_is_escaped(tmp_path):
    """A run named and configured with markup shows it as text (names, config, error, metric names)."""
    path = tmp_path / "<i>x&y.zarr"
    train_tiny(path, "sgd", steps=4)
    attrs_file = path / "zarr.json"
    meta = json.loads(attrs_file.read_text())
    meta["attributes"]["status"] = "failed"
    meta["attributes"]["error"] = "<script>alert(1)</script>"
    config = json.loads(meta["attributes"]["config"])
    config["optimizer"] = "<img src=x onerror=alert(2)>"
    meta["attributes"]["config"] = json.dumps(config)
    attrs_file.write_text(json.dumps(meta))
    pages = [Run(path, figures=())._repr_html_(), Experiment(tmp_path, figures=())._repr_html_()]
    for page in pages:
        assert "<script>" not in page and "<img src=x" not in page and "<i>x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0] and "&lt;i&gt;x&amp;y" in pages[0]
    assert "&lt;img src=x onerror=alert(2)&gt;" in pages[1]


def test_example_notebook_runs_on_a_tiny_experiment(tiny_experiment, tmp_path, monkeypatch):
    folder = tmp_path / "exp"
    shutil.copytree(tiny_experiment, folder)
    monkeypatch.setenv("DYNAMICS_RUN_DIR", str(folder))
    monkeypatch.delenv("MPLBACKEND", raising=False)   # the kernel's own inline backend shows the figures
    notebook = nbformat.read(ROOT / "examples" / "notebook.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code")   # committed without outputs
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if o.output_type == "execute_result" and "text/html" in o["data"]]
    assert any("Experiment exp" in page and "sgd" in page for page in html)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2   # the user's own figure and the restyled report figure
    table = next(page for page in html if "NTK alignment to init" in page)
    checkpoints = xr.open_zarr(folder / "adam.zarr", group="checkpoints")
    kernels = checkpoints["ntk"].values
    last = float(np.sum(kernels[0] * kernels[-1]) / np.linalg.norm(kernels[0]) / np.linalg.norm(kernels[-1]))
    assert f"{last:.6f}"[:6] in table   # the notebook's analysis of the last checkpoint, by the textbook formula
