"""A new run store: its layout (schema "dynamics.run/1", :mod:`dynamics.store.schema`) built aside,
then renamed into place, locked (:func:`create_store`)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from dynamics.errors import StoreError
from dynamics.store import root as root_record
from dynamics.store import schema
from dynamics.store.batch import create_array
from dynamics.store.chunks import group_document, write_document
from dynamics.store.lock import StoreLock, abandoned
from dynamics.store.probe import input_variables


def _versions() -> dict[str, str]:
    import torch
    import xarray

    import dynamics
    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "xarray": xarray.__version__, "zarr": zarr.__version__, "dynamics": dynamics.__version__}


def _probe_dims(ndim: int, base: str) -> tuple[str, ...]:
    if ndim == 2:
        return ("probe", base)
    return ("probe",) + tuple(f"{base}_{i}" for i in range(ndim - 1))


def _sweep_abandoned_creations(path: Path) -> None:
    """Delete ``.NAME.creating-PID`` folders next to ``path`` left by creators that were killed."""
    for staging in path.parent.glob(f".{path.name}.creating-*"):
        if staging.is_dir() and abandoned(staging):
            shutil.rmtree(staging, ignore_errors=True)


def create_store(path: Path, config: dict | None, probe_x: Any, probe_y: np.ndarray, attrs: dict[str, Any],
                 probe_index: np.ndarray | None) -> StoreLock:
    """Create a new store at ``path`` (atomically: built in ``.NAME.creating-PID`` beside it, then
    renamed into place) holding the probe, the empty row groups and the root attributes ``attrs`` besides
    its own; return its lock, held. StoreError when ``path`` exists (and is not an empty folder) or
    was created meanwhile; TypeError for a config that is not JSON-serialisable."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise StoreError(f"{path} already exists; open it with resume=True or choose another path")
    try:
        config_json = json.dumps(config if config is not None else {}, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise TypeError(f"config must be JSON-serialisable: {err}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_abandoned_creations(path)
    staging = path.parent / f".{path.name}.creating-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    lock = StoreLock(staging)
    try:
        lock.acquire()
        _build(staging, config_json, probe_x, probe_y, attrs or {}, probe_index)
        try:
            os.rename(staging, path)
        except OSError:
            raise StoreError(f"{path} was created by another process meanwhile") from None
        lock.moved_to(path)
    except BaseException:
        lock.release()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return lock


def _build(path: Path, config_json: str, probe_x: Any, probe_y: np.ndarray, extra: dict,
           probe_index: np.ndarray | None) -> None:
    """Write the layout of an empty store into the folder ``path``: its groups, coordinates, probe and
    root record (no rows committed)."""
    for group in ("metrics", "checkpoints", "params", "probe"):
        (path / group).mkdir()
        write_document(path / group, group_document())
    create_array(path, "metrics", "step", ("step",), (0,), schema.METRICS_CHUNK, np.int64)
    create_array(path, "metrics", "epoch", ("step",), (0,), schema.METRICS_CHUNK, np.float64)
    for group in ("checkpoints", "params"):
        coord_chunk = schema.checkpoint_chunk_rows(8)
        create_array(path, group, "checkpoint", ("checkpoint",), (0,), coord_chunk, np.int64)
        create_array(path, group, "checkpoint_step", ("checkpoint",), (0,), coord_chunk, np.int64)
        create_array(path, group, "checkpoint_epoch", ("checkpoint",), (0,), coord_chunk, np.float64)
    probe_arrays = dict(input_variables(probe_x))   # the model inputs' layout: dynamics.store.probe
    probe_arrays["y"] = (("probe",) if probe_y.ndim == 1 else _probe_dims(probe_y.ndim, "output"), probe_y, {})
    if probe_index is not None:
        probe_arrays["probe_index"] = (("probe",), probe_index, {})
    for name, (dims, data, array_attrs) in probe_arrays.items():
        create_array(path, "probe", name, dims, data.shape, data.shape[0], data.dtype,
                     array_attrs).write_rows(0, data)
    attrs = {"schema": schema.SCHEMA, "config": config_json, "versions": json.dumps(_versions()),
             "status": "running", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "committed": json.dumps(schema.empty_committed()), "nonfinite": json.dumps({}), **extra}
    view = root_record.committed_view(root_record.read_nodes(path), schema.empty_committed())
    root_record.write_root(path, root_record.root_document(attrs, view))
