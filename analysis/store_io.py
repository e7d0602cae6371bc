"""Reading run stores and writing the ``analysis`` group back into them.

A run is given as a path to a store (schema "dynamics.run/1") or as the ``xarray.DataTree`` that
:func:`dynamics.store.open_run` returns (committed data only, lazily loaded). The analysis is written
with ``Dataset.to_zarr(store, group="analysis", mode="w")``, which replaces that group only; the
training groups (metrics, checkpoints, params, probe) and root attributes are never rewritten. While
writing, the store's lock (:class:`dynamics.store.lock.StoreLock`) is held, so an analysis cannot
race a live writer; afterwards the root's consolidated metadata, when the store has it, is rebuilt so
that readers using it (``xarray.open_datatree``) see the new group.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from dynamics.errors import StoreError
from dynamics.store import open_run
from dynamics.store.lock import StoreLock

ANALYSIS_GROUP = "analysis"
TRAINING_GROUPS = ("metrics", "checkpoints", "params", "probe")


def open_tree(run: object) -> tuple[xr.DataTree, Path | None]:
    """(DataTree of the run, its store path or None) from a path or a DataTree."""
    if isinstance(run, xr.DataTree):
        return run, None
    if isinstance(run, (str, os.PathLike)):
        path = Path(run)
        return open_run(path), path
    raise TypeError(f"run must be a path to a run store or an xarray.DataTree, got {type(run).__name__}")


def group(tree: xr.DataTree, name: str) -> xr.Dataset:
    """Child ``name`` of the run tree as a Dataset; StoreError if the store lacks it."""
    if name not in tree.children:
        raise StoreError(f"run has no {name!r} group (it has {sorted(tree.children)}); is it a dynamics run store?")
    return tree[name].to_dataset()


def run_identity(tree: xr.DataTree, path: Path | None) -> tuple[str, dict[str, Any], str, int]:
    """(config JSON, config dict, optimizer name, seed) from the root attributes.

    The optimizer is ``config["optimizer"]`` (its ``name`` when it is a table), else the store's file
    name without ".zarr"; the seed is ``config["seed"]`` (else ``config["train"]["seed"]``, else -1).
    """
    raw = tree.attrs.get("config", "{}")
    try:
        config = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError) as err:
        raise StoreError(f"the run's root attribute 'config' is not valid JSON ({err})") from None
    optimizer = config.get("optimizer")
    if isinstance(optimizer, dict):
        optimizer = optimizer.get("name") or optimizer.get("kind")
    if not optimizer:
        optimizer = path.name.removesuffix(".zarr") if path is not None else "run"
    seed = config.get("seed", config.get("train", {}).get("seed", -1) if isinstance(config.get("train"), dict) else -1)
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        seed = -1
    return json.dumps(config, sort_keys=True), config, str(optimizer), seed


def store_order(tree: xr.DataTree, group_name: str, names: list[str]) -> list[str]:
    """``names`` in the order the writer created them (the root's ``committed`` variable list, i.e.
    model order), whatever order the reader listed them in; names it does not list keep their order."""
    try:
        listed = json.loads(tree.attrs["committed"])["variables"][group_name]
    except (KeyError, TypeError, ValueError):
        return list(names)
    rank = {name: i for i, name in enumerate(listed)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), names.index(name)))


def write_analysis_group(path: Path, dataset: xr.Dataset) -> None:
    """Replace group ``analysis`` of the store at ``path`` by ``dataset``, under the store's lock."""
    lock = StoreLock(path).acquire()
    try:
        consolidated_root = "consolidated_metadata" in json.loads((path / "zarr.json").read_text())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            warnings.filterwarnings("ignore", message=r"Object at .* is not recognized as a component")
            warnings.filterwarnings("ignore", message=r"The data type .* does not have a Zarr V3 specification")
            dataset.to_zarr(str(path), group=ANALYSIS_GROUP, mode="w", consolidated=False, zarr_format=3)
            if consolidated_root:
                zarr.consolidate_metadata(str(path))
    finally:
        lock.release()


def write_dataset(path: Path, dataset: xr.Dataset) -> None:
    """Write ``dataset`` as a whole zarr v3 store at ``path`` (replacing it), consolidated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        warnings.filterwarnings("ignore", message=r"The data type .* does not have a Zarr V3 specification")
        dataset.to_zarr(str(path), mode="w", consolidated=True, zarr_format=3)


def read_analysis_group(path: Path) -> xr.Dataset | None:
    """The stored ``analysis`` group of the store at ``path`` (loaded), or None when it has none."""
    if not (path / ANALYSIS_GROUP / "zarr.json").is_file():
        return None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        with xr.open_zarr(str(path), group=ANALYSIS_GROUP, consolidated=False, zarr_format=3) as ds:
            return ds.load()


def string_coord(values: list[str]) -> np.ndarray:
    """Labels as a numpy unicode array (stored by zarr v3 as its string type)."""
    return np.asarray(values, dtype=str) if values else np.asarray([], dtype="<U1")
