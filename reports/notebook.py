"""Runs and experiments in a Jupyter notebook: objects that display themselves (``_repr_html_``).

::

    from reports.notebook import Experiment, Run
    exp = Experiment("runs/mnist1d")      # the last expression of a cell shows: runs, status, steps,
    exp                                   # checkpoints, last metrics and the report's key figures
    fig = exp.figure("ntk_dynamics")      # a matplotlib Figure: restyle it, save it
    run = exp.runs[0]                     # a Run: run.metrics / run.checkpoints are xarray Datasets

What is shown comes from the committed data (a run being trained shows what it committed so far).
The figures are those of the HTML report (:mod:`reports.catalog`), drawn from the analysis that
``dynamics report`` uses (:func:`reports.experiment.load_analysis` for a folder, ``analysis.open_runs``
for one store), so showing a finished run caches its analysis in the store as ``dynamics analyze``
does; a store being trained is never written. Every text that comes from a run (names, statuses,
metric names, errors) is HTML-escaped.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import xarray as xr

from reports import html as h
from reports.catalog import FIGURES
from reports.experiment import ReportError, is_run_store, load_analysis, run_stores, store_info
from reports.plotting import figure_png
from reports.runs import as_combined

#: Figures a run or an experiment shows inline (names of :data:`reports.catalog.FIGURES`).
KEY_FIGURES = ("loss_accuracy", "batch_loss_change", "ntk_dynamics")
CHECKPOINT_SCALARS = ("train_loss", "train_acc", "test_loss", "test_acc")


def _figure(ds: xr.Dataset, name: str):
    specs = {spec.name: spec for spec in FIGURES}
    if name not in specs:
        raise ValueError(f"unknown figure {name!r}; choose one of {sorted(specs)}")
    return specs[name].draw(as_combined(ds))


def _figures_html(ds_of, names) -> str:
    """The figures ``names`` as inline PNGs; a figure that cannot be drawn says why, escaped."""
    if not names:
        return ""
    try:
        ds = ds_of()
    except (ReportError, ValueError) as error:
        return f'<p class="note">No figures: {h.escape(error)}</p>'
    parts = []
    for name in names:
        try:
            fig = _figure(ds, name)
        except ValueError as why:
            parts.append(f"<p>{h.escape(name)}: not drawn ({h.escape(why)})</p>")
            continue
        png = base64.b64encode(figure_png(fig, dpi=72)).decode("ascii")
        fig.clf()
        parts.append(f'<img alt="{h.escape(name)}" style="max-width:100%" src="data:image/png;base64,{png}">')
    return "".join(parts)


def _value(value: float) -> str:
    return f"{value:.6g}" if np.isfinite(value) else "—"


class Run:
    """One run store: ``path``, ``name``, ``status``, ``steps`` and ``checkpoints`` (committed counts),
    ``metrics``/``checkpoints_data`` (the store's groups as xarray Datasets), ``last_metrics()``,
    ``analysis()`` and ``figure(name)``. ReportError for a path that is not a run store."""

    def __init__(self, path: str | os.PathLike, *, figures=KEY_FIGURES) -> None:
        self.path = Path(path)
        if not is_run_store(self.path):
            raise ReportError(f"{str(self.path)!r} is not a run store (schema dynamics.run/...)")
        self.name = self.path.name.removesuffix(".zarr")
        self.figures = tuple(figures)

    @property
    def info(self):
        """Root attributes now (status, config, versions, error)."""
        return store_info(self.path)

    @property
    def status(self) -> str:
        return self.info.status

    def _committed(self) -> dict:
        attrs = json.loads((self.path / "zarr.json").read_text()).get("attributes", {})
        committed = attrs.get("committed")
        return json.loads(committed) if isinstance(committed, str) else (committed or {})

    @property
    def steps(self) -> int:
        """Committed metrics rows."""
        return int(self._committed().get("metrics", 0))

    @property
    def checkpoints(self) -> int:
        """Committed checkpoints."""
        return int(self._committed().get("checkpoint", 0))

    def tree(self) -> xr.DataTree:
        """The store as read by :func:`dynamics.open_run` (committed data only, lazily loaded)."""
        from dynamics import open_run

        return open_run(self.path, analysis="omit")

    @property
    def metrics(self) -> xr.Dataset:
        tree = self.tree()
        return tree["metrics"].to_dataset() if "metrics" in tree.children else xr.Dataset()

    @property
    def checkpoints_data(self) -> xr.Dataset:
        tree = self.tree()
        return tree["checkpoints"].to_dataset() if "checkpoints" in tree.children else xr.Dataset()

    def last_metrics(self) -> dict[str, tuple[int, float]]:
        """name → (step, value) of the last finite value of every metric and checkpoint scalar."""
        out = {}
        for ds, coord in ((self.metrics, "step"), (self.checkpoints_data, "checkpoint_step")):
            if coord not in ds.coords:
                continue
            steps = ds[coord].values
            for name in ds.data_vars:
                variable = ds[name]
                if variable.ndim != 1 or variable.dtype.kind != "f":
                    continue
                values = variable.values
                finite = np.flatnonzero(np.isfinite(values))
                if finite.size:
                    out[name] = (int(steps[finite[-1]]), float(values[finite[-1]]))
        return out

    def analysis(self) -> xr.Dataset:
        """The run's analysis (``analysis.open_runs``: the stored one when fresh, else computed)."""
        from analysis import open_runs

        return open_runs([self.path])

    def figure(self, name: str):
        """The report figure ``name`` (e.g. "ntk_dynamics") of this run: a matplotlib Figure."""
        return _figure(self.analysis(), name)

    def summary_html(self) -> str:
        info = self.info
        rows = [["status", info.status], ["steps committed", str(self.steps)],
                ["checkpoints committed", str(self.checkpoints)]]
        if info.error:
            rows.append(["error", info.error])
        last = [[name, str(step), _value(value)] for name, (step, value) in sorted(self.last_metrics().items())]
        return (f"<h3>Run {h.escape(self.name)}</h3>" + h.table(["", ""], rows)
                + (h.table(["last value of", "step", "value"], last, numeric={1, 2}) if last else ""))

    def _repr_html_(self) -> str:
        return f"<div>{self.summary_html()}{_figures_html(self.analysis, self.figures)}</div>"

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r}, steps={self.steps}, checkpoints={self.checkpoints})"


class Experiment:
    """An experiment folder (one run store per run): ``runs`` (:class:`Run`), ``analysis()`` (the
    combined analysis the report uses) and ``figure(name)``. ReportError for a missing folder."""

    def __init__(self, folder: str | os.PathLike, *, figures=KEY_FIGURES) -> None:
        self.path = Path(folder)
        if not self.path.is_dir():
            raise ReportError(f"{str(self.path)!r} is not an existing folder")
        self.figures = tuple(figures)

    @property
    def runs(self) -> list[Run]:
        return [Run(p, figures=self.figures) for p in run_stores(self.path) if is_run_store(p)]

    def analysis(self) -> xr.Dataset:
        """The combined analysis of every run (what ``dynamics report`` draws)."""
        return load_analysis(self.path)

    def figure(self, name: str):
        """The report figure ``name`` over every run: a matplotlib Figure."""
        return _figure(self.analysis(), name)

    def _repr_html_(self) -> str:
        rows = []
        for run in self.runs:
            info, last = run.info, run.last_metrics()
            config = info.config if isinstance(info.config, dict) else {}
            rows.append([run.name, str(config.get("optimizer", "—")), str(config.get("seed", "—")), info.status,
                         str(run.steps), str(run.checkpoints),
                         *(_value(last[k][1]) if k in last else "—" for k in ("loss", "test_acc"))])
        header = ["run", "optimiser", "seed", "status", "steps", "checkpoints", "last loss", "last test_acc"]
        table = h.table(header, rows, numeric={4, 5, 6, 7}) if rows else "<p>No run stores yet.</p>"
        return (f"<div><h3>Experiment {h.escape(self.path.name)}</h3>{table}"
                f"{_figures_html(self.analysis, self.figures if rows else ())}</div>")

    def __repr__(self) -> str:
        return f"Experiment({str(self.path)!r}, runs={[r.name for r in self.runs]})"
