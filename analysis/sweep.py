"""A sweep folder (``dynamics sweep``) as one lazy xarray Dataset, and its analysis on a dask cluster.

``open_sweep(DIR)`` has one dimension per ``[sweep]`` key, named exactly as the dotted key (values in
the file's order), plus ``optimizer`` — then each run's own dimensions:
- per step (dim ``step``): every variable of the run's ``metrics`` group (``loss``, ``loss_after``,
  ``other_loss``..., ``time``) and ``epoch``;
- per checkpoint (dim ``checkpoint``, the index 0, 1, ...): the checkpoint scalars (``train_loss``,
  ``train_acc``, ``test_loss``, ``test_acc``...) with ``checkpoint_step`` and ``checkpoint_epoch``;
- the run's stored analysis (group ``analysis``, :func:`analysis.analyze`) where it exists: NTK
  metrics (``ntk_alignment_init``...), per layer ``cka_init``..., per parameter weight changes,
  per step ``own_change``/``other_change``/``transfer``...; variables the other groups already hold
  are not repeated;
- ``run`` (the run's name, "" where none) and ``status`` (from its store: "complete", "failed", ...).
Values are NaN where a run is missing, failed or incomplete (only complete runs are read), and
past a run's end when runs differ in length. Identical runs of several grid points (Adam at every GN
α) are read once and appear at each point. Arrays are dask-backed: nothing is read until used.
Attributes: ``sweep`` (JSON of the grid), ``config`` (JSON of the base config), ``folder``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from analysis.labels import unique_labels
from analysis.store_io import fresh_analysis
from dynamics.store.reader import open_run
from dynamics.sweep_manifest import read_manifest, store_status

CHECKPOINT_COORDS = {"step": "checkpoint_step", "epoch": "checkpoint_epoch"}


def sweep_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of sweep folder ``folder``; ValueError when it has none."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise ValueError(f"{str(folder)!r} is not a sweep folder (no sweep.json); make one with `dynamics sweep`")
    return manifest


def run_dataset(store: str | os.PathLike, *, with_analysis: bool = True) -> xr.Dataset:
    """One run's metrics, checkpoint scalars and stored analysis as one lazy (dask) Dataset, floats."""
    tree = open_run(store, analysis="omit")
    metrics = tree["metrics"].to_dataset().reset_coords()
    checkpoints = tree["checkpoints"].to_dataset()
    scalars = checkpoints[[v for v in checkpoints.data_vars if checkpoints[v].dims == ("checkpoint",)]]
    scalars = scalars.reset_coords().rename({k: v for k, v in CHECKPOINT_COORDS.items() if k in scalars})
    scalars = scalars.assign_coords(checkpoint=np.arange(scalars.sizes.get("checkpoint", 0)))
    parts = [metrics, scalars]
    stored = fresh_analysis(Path(store))[0] if with_analysis else None
    if stored is None and with_analysis and (Path(store) / "analysis").is_dir():
        warnings.warn(f"{store}: its analysis group is out of date or unreadable and is left out; recompute "
                      f"it with `dynamics analyze`", RuntimeWarning, stacklevel=2)
    if stored is not None:
        taken = set(metrics.variables) | set(scalars.variables)
        extra = stored[[v for v in stored.data_vars if v not in taken]]
        extra = extra.drop_vars([c for c in extra.coords if c not in extra.dims and c in taken] +
                                [c for c in ("epoch", "checkpoint_step", "checkpoint_epoch") if c in extra.coords])
        parts.append(extra)
    ds = xr.merge(parts, join="outer", compat="override", combine_attrs="drop")
    ds = ds.astype({name: np.float64 for name, v in ds.data_vars.items() if v.dtype.kind in "biuf"})
    return ds.chunk()


def _blank(like: xr.Dataset) -> xr.Dataset:
    """``like`` with every data variable NaN (lazy)."""
    return xr.full_like(like, np.nan, dtype=np.float64)


def open_sweep(folder: str | os.PathLike, *, with_analysis: bool = True) -> xr.Dataset:
    """The sweep folder ``folder`` as one lazy Dataset (see the module docstring).

    Raises ValueError when ``folder`` has no ``sweep.json``, StoreError for an unreadable manifest.
    """
    folder = Path(folder)
    manifest = sweep_manifest(folder)
    keys, optimizers = list(manifest["sweep"]), list(manifest["optimizers"])
    # the manifest's run names are its keys (unique); the one label rule also refuses two runs of one store
    unique_labels(list(manifest["runs"]), [folder / run["store"] for run in manifest["runs"].values()])
    statuses, datasets = {}, {}
    for name, run in manifest["runs"].items():
        statuses[name] = store_status(folder / run["store"]) or "missing"
        if statuses[name] == "complete":
            datasets[name] = run_dataset(folder / run["store"], with_analysis=with_analysis)
    names = [point["runs"].get(optimizer, "") for point in manifest["points"] for optimizer in optimizers]
    template = _template(list(datasets.values())) if any(n not in datasets for n in names) else None
    cells = [datasets[name] if name in datasets else template for name in names]
    combined = xr.concat(cells, dim="cell", join="outer", data_vars="all", coords="different", compat="equals",
                         fill_value=np.nan, combine_attrs="drop")
    combined["run"] = ("cell", np.asarray(names, dtype=str))
    combined["status"] = ("cell", np.asarray([statuses.get(n, "missing") for n in names], dtype=str))
    shape = [len(manifest["sweep"][k]) for k in keys] + [len(optimizers)]
    index = {k: [p["values"][k] for p in manifest["points"] for _ in optimizers] for k in keys}
    index["optimizer"] = [o for _ in manifest["points"] for o in optimizers]
    combined = combined.assign_coords({f"_{k}": ("cell", v) for k, v in index.items()})
    combined = combined.set_index(cell=[f"_{k}" for k in index]).unstack("cell")
    combined = combined.rename({f"_{k}": k for k in index})
    combined = combined.reindex({k: manifest["sweep"][k] for k in keys} | {"optimizer": optimizers})
    order = [*keys, "optimizer"]
    combined = combined.transpose(*order, ...)
    if [combined.sizes[d] for d in order] != shape:
        raise ValueError(f"sweep folder {str(folder)!r}: the points of its manifest do not fill its grid")
    combined.attrs = {"sweep": json.dumps(manifest["sweep"]), "config": json.dumps(manifest["config"]),
                      "folder": str(folder)}
    return combined


def _template(datasets: list[xr.Dataset]) -> xr.Dataset:
    """A NaN Dataset with every variable of ``datasets`` (the stand-in for a missing run)."""
    if not datasets:
        return xr.Dataset()
    first, variables = datasets[0], {}
    for ds in datasets:   # each variable from the first run that has it
        variables.update({name: ds[name] for name in ds.data_vars if name not in variables})
    return _blank(xr.Dataset(variables).drop_vars([c for c in first.coords if c not in first.dims], errors="ignore"))


def final(values: xr.DataArray, dim: str = "checkpoint") -> xr.DataArray:
    """The last non-NaN value along ``dim`` of every series (NaN where a series has none)."""
    values = values.load()
    n = values.sizes[dim]
    position = xr.DataArray(np.arange(1, n + 1), dims=dim)
    last = (values.notnull() * position).max(dim) - 1
    picked = values.isel({dim: last.clip(min=0)})
    return picked.where(last >= 0)


def analyze_task(store: str) -> str:
    """Analyse one run store on a worker (single-threaded), writing its ``analysis`` group."""
    from analysis.run_analysis import analyze
    from dynamics.cluster import single_threaded

    single_threaded()
    analyze(store, write=True)
    return store


def analyze_sweep(folder: str | os.PathLike, *, workers: int | None = None, scheduler: str | None = None) -> list[Path]:
    """``analysis.analyze`` every complete run of sweep ``folder``, one dask task per run (a local
    cluster of ``workers`` processes, or the cluster at ``scheduler``); returns the stores analysed."""
    from distributed import wait

    from dynamics.cluster import open_client

    folder = Path(folder)
    manifest = sweep_manifest(folder)
    stores = [folder / run["store"] for run in manifest["runs"].values()
              if store_status(folder / run["store"]) == "complete"]
    if not stores:
        return []
    with open_client(workers=workers, scheduler=scheduler) as client:
        futures = [client.submit(analyze_task, str(store), pure=False) for store in stores]
        wait(futures)
        for future in futures:
            future.result()  # raise the first error
    return stores
