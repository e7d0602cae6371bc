"""Loading an experiment folder: its run stores' root attributes and its combined analysis.

An experiment folder holds one zarr store per run (``gn.zarr``, ``sgd.zarr``, ...; schema
"dynamics.run/1") and, once analysed, ``analysis.zarr`` (docs/DESIGN.md §6). Everything here reads
with plain zarr/xarray.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import xarray as xr
import zarr

from dynamics.errors import DynamicsError

ANALYSIS_STORE = "analysis.zarr"


class ReportError(DynamicsError, ValueError):
    """A report cannot be made from what the user pointed at (missing folder, no runs, bad output path);
    the command line prints it as one line and exits with status 2."""


@dataclass(frozen=True)
class StoreInfo:
    """Root attributes of one run store; ``config``/``versions`` are parsed from JSON when stored as text."""

    path: Path
    label: str
    config: dict
    versions: dict
    status: str
    schema: str
    error: str = ""   # the reason recorded by a run whose status is "failed"


def experiment_dir(run_dir) -> Path:
    """``run_dir`` as a Path, checked to be an existing folder."""
    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(f"run_dir must be a path, got {run_dir!r} ({type(run_dir).__name__})")
    path = Path(run_dir)
    if not path.is_dir():
        raise ReportError(f"run_dir {str(path)!r} is not an existing folder")
    return path


def as_dict(value, what: str) -> dict:
    """A root attribute as a dict: dicts as they are, JSON text parsed, anything else as ``{what: value}``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return {what: value}
        return parsed if isinstance(parsed, dict) else {what: parsed}
    return {what: value}


def run_stores(run_dir) -> list[Path]:
    """The run stores of an experiment folder: every ``*.zarr`` folder except ``analysis.zarr``, sorted."""
    path = experiment_dir(run_dir)
    return sorted(p for p in path.glob("*.zarr") if p.is_dir() and p.name != ANALYSIS_STORE)


def store_info(path, label: str | None = None) -> StoreInfo:
    """Read a run store's root attributes (schema, config, versions, status) without this package's
    reader. ``label``: the run's label among the runs shown with it (:func:`store_infos`); default
    the label it has on its own (:func:`analysis.labels.run_labels` of this run alone)."""
    path = Path(path)
    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception as error:  # zarr raises several types for "not a group"
        raise ReportError(f"{str(path)!r} is not a readable zarr run store: {error}") from error
    config = as_dict(attrs.get("config"), "config")
    if label is None:
        from analysis.labels import run_identity   # the reports layer sits above analysis

        label = run_identity(config, path)[0]
    return StoreInfo(path, label, config, as_dict(attrs.get("versions"), "versions"),
                     str(attrs.get("status", "unknown")), str(attrs.get("schema", "unknown")),
                     str(attrs.get("error", "")))


def store_infos(paths) -> list[StoreInfo]:
    """:func:`store_info` of every store of ``paths``, labelled as :func:`analysis.open_runs` labels
    them (:func:`analysis.labels.run_labels`: the same labels as the analysis' ``run`` dimension)."""
    from analysis.labels import run_identity, run_labels   # the reports layer sits above analysis

    infos = [store_info(path) for path in paths]
    labels = run_labels([run_identity(info.config, info.path) for info in infos], [info.path for info in infos])
    return [dataclasses.replace(info, label=label) for info, label in zip(infos, labels)]


def _newest_mtime(path: Path, skip_top: tuple[str, ...] = ()) -> float:
    newest = 0.0  # files only: a folder's own mtime changes with every entry added, not with data
    for root, dirs, files in os.walk(path):
        if Path(root) == path:
            dirs[:] = [d for d in dirs if d not in skip_top]
        for name in files:
            newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
    return newest


def is_run_store(path: Path) -> bool:
    """True when ``path`` is itself a run store (root attribute ``schema`` "dynamics.run/…")."""
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    schema = (meta.get("attributes") or {}).get("schema") if isinstance(meta, dict) else None
    return isinstance(schema, str) and schema.startswith("dynamics.run/")


def analysis_is_fresh(run_dir, *, centered_alignment: bool = False) -> bool:
    """True when ``analysis.zarr`` was computed from the folder's current run stores (with the
    requested kernel alignment: an older analysis without tokens counts as uncentred).

    An ``analysis.zarr`` that records the source tokens of its stores
    (:func:`analysis.runs.experiment_analysis_is_fresh`) is judged by them; an older one without
    tokens by file times: newer than every run store (ignoring their own analysis group).
    """
    path = experiment_dir(run_dir)
    analysis = path / ANALYSIS_STORE
    if not (analysis / "zarr.json").is_file():
        return False
    from analysis.runs import experiment_analysis_is_fresh  # the reports layer sits above analysis

    fresh = experiment_analysis_is_fresh(path, centered_alignment=centered_alignment)
    if fresh is not None:
        return fresh
    if centered_alignment:
        return False
    written = _newest_mtime(analysis)
    return all(_newest_mtime(store, ("analysis",)) <= written for store in run_stores(path))


def load_analysis(run_dir, *, centered_alignment: bool = False) -> xr.Dataset:
    """The experiment's combined analysis: ``analysis.zarr`` if fresh (computed from the current stores
    with the requested kernel alignment), else ``analysis.analyze_experiment``."""
    path = experiment_dir(run_dir)
    if not analysis_is_fresh(path, centered_alignment=centered_alignment):
        if not run_stores(path):
            raise ReportError(f"run_dir {str(path)!r} holds no run stores (*.zarr) and no {ANALYSIS_STORE}")
        from analysis import analyze_experiment  # the reports layer sits above analysis

        return analyze_experiment(path, centered_alignment=centered_alignment).load()
    from analysis.store_io import read_dataset

    ds = read_dataset(path / ANALYSIS_STORE)
    return analyze_experiment_if_gone(path, centered_alignment) if ds is None else ds


def analyze_experiment_if_gone(path: Path, centered_alignment: bool = False) -> xr.Dataset:
    """The analysis of ``path`` recomputed (``analysis.zarr`` vanished after the freshness check)."""
    from analysis import analyze_experiment

    return analyze_experiment(path, centered_alignment=centered_alignment).load()
