"""A run store as TensorBoard event files (``dynamics export tensorboard STORE|DIR --out LOGDIR``).

One folder of event files per run, ``LOGDIR/<store name without .zarr>``, so ``tensorboard --logdir
LOGDIR`` lists the runs of an experiment side by side. Scalars and their tags (the mirrors' tags,
:func:`dynamics.mirrors.tag`):

- ``metrics/<name>`` at ``step``: every variable of the store's ``metrics`` group;
- ``checkpoints/<name>`` at the checkpoint's ``step``: every scalar variable of ``checkpoints``
  (train/test loss and accuracy, ...; not the NTK and representation arrays);
- ``analysis/<name>`` at the checkpoint's step (or at ``step`` for per-step quantities such as
  ``own_change``), with ``/<layer>`` or ``/<param>`` appended for per-layer (CKA to init, effective
  rank, probe accuracy) and per-parameter quantities: the run's analysis Dataset
  (:func:`analysis.analyze`), when given; variables it copies from the store are not repeated.

Values stored as NaN (not recorded) are left out; TensorBoard keeps float32. The store is read
through :func:`dynamics.store.open_run` (committed data only: a run being trained is exported as far
as it is committed) and never written. An existing ``LOGDIR/<run>`` holding only event files is
replaced as a whole (the new files are written beside it first); one holding anything else is refused.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import xarray as xr

from dynamics.errors import DynamicsError
from dynamics.integrations._require import require
from dynamics.mirrors import tag

EVENT_PREFIX = "events.out.tfevents."
EXTRA_DIMS = ("layer", "param")


def _series(group: str, ds: xr.Dataset, steps: np.ndarray, dim: str, skip=()) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(tag, steps, values) of every numeric variable of ``ds`` over ``dim`` (and at most one of
    ``EXTRA_DIMS``), finite values only."""
    for name in sorted(ds.data_vars):
        if name in skip:
            continue
        variable = ds[name]
        if variable.dtype.kind not in "fiub" or dim not in variable.dims:
            continue
        others = [d for d in variable.dims if d != dim]
        if not others:
            yield from _finite(tag(group, name), steps, variable.values)
        elif len(others) == 1 and others[0] in EXTRA_DIMS:
            for label in variable[others[0]].values:
                yield from _finite(f"{tag(group, name)}/{label}", steps,
                                   variable.sel({others[0]: label}).transpose(dim).values)


def _finite(name: str, steps: np.ndarray, values: np.ndarray) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    if keep.any():
        yield name, np.asarray(steps, dtype=np.int64)[keep], values[keep]


def scalar_series(metrics: xr.Dataset | None, checkpoints: xr.Dataset | None,
                  analysis: xr.Dataset | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every (tag, steps, values) a run exports (see the module docstring), in tag order."""
    out = []
    if metrics is not None and "step" in metrics.dims:
        out += _series("metrics", metrics, metrics["step"].values, "step")
    checkpoint_steps = None
    if checkpoints is not None and "checkpoint" in checkpoints.dims:
        checkpoint_steps = checkpoints["checkpoint_step"].values
        out += _series("checkpoints", checkpoints, checkpoint_steps, "checkpoint")
    if analysis is not None:
        copied = set(metrics.data_vars if metrics is not None else ()) | set(
            checkpoints.data_vars if checkpoints is not None else ())
        if "checkpoint" in analysis.dims:
            out += _series("analysis", analysis, analysis["checkpoint_step"].values, "checkpoint", skip=copied)
        if "step" in analysis.dims:
            out += _series("analysis", analysis, analysis["step"].values, "step", skip=copied)
    return sorted(out, key=lambda item: item[0])


def write_events(logdir: str | os.PathLike, series: list[tuple[str, np.ndarray, np.ndarray]]) -> int:
    """Write ``series`` into new event files in ``logdir`` (created); returns the number of scalars."""
    require("tensorboard", "tensorboard", "dynamics export tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    count = 0
    writer = SummaryWriter(log_dir=os.fspath(logdir))
    try:
        for name, steps, values in series:
            for step, value in zip(steps.tolist(), values.tolist()):
                writer.add_scalar(name, value, global_step=step)
            count += len(steps)
    finally:
        writer.close()
    return count


def export_store(store: str | os.PathLike, logdir: str | os.PathLike, analysis: xr.Dataset | None = None) -> tuple[Path, int]:
    """Export the run store ``store`` into ``logdir/<store name>`` (replacing an earlier export);
    returns (that folder, number of scalars). ``analysis``: the run's analysis Dataset, or None.
    StoreError for a path that is not a run store; DynamicsError for a target folder that holds
    files other than event files."""
    from dynamics.store import open_run

    store = Path(store)
    tree = open_run(store)
    groups = {name: tree[name].to_dataset() if name in tree.children else None for name in ("metrics", "checkpoints")}
    series = scalar_series(groups["metrics"], groups["checkpoints"], analysis)
    target = Path(logdir) / store.name.removesuffix(".zarr")
    check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = target.with_name(f".{target.name}.new-{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    try:
        count = write_events(fresh, series)
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            os.replace(target, old)
        os.replace(fresh, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return target, count


def check_target(target: Path) -> None:
    """DynamicsError unless ``target`` is absent, or a folder of event files only (an earlier export)."""
    if not target.exists():
        return
    if not target.is_dir():
        raise DynamicsError(f"'{target}' exists and is not a folder; choose another --out")
    foreign = [p.name for p in target.iterdir() if not (p.is_file() and p.name.startswith(EVENT_PREFIX))]
    if foreign:
        raise DynamicsError(f"'{target}' holds files that are not TensorBoard event files ({', '.join(sorted(foreign)[:3])}"
                            f"{', ...' if len(foreign) > 3 else ''}); choose another --out")
