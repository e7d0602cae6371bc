"""Reading run stores: schema checks and :func:`open_run`, which shows committed data only.

Plain xarray reads a store without this package::

    xarray.open_zarr("run.zarr", group="metrics")
    xarray.open_datatree("run.zarr", engine="zarr")

A store whose writer was killed may hold rows past the ``committed`` mark (and, if the kill fell
between two array resizes, variables of unequal length, which plain xarray refuses). :func:`open_run`
opens each committed variable on its own, cuts it to the committed length and only then assembles the
datasets, so it opens every such store and never shows uncommitted rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dynamics.errors import StoreError
from dynamics.store import schema, validate


@contextlib.contextmanager
def quiet_zarr_warnings() -> Iterator[None]:
    """Silence, inside this block only, zarr's notes that consolidated metadata is not in the v3 spec
    and that non-zarr files (the lock, ``resume/``) are not part of the hierarchy."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        warnings.filterwarnings("ignore", message=r"Object at .* is not recognized as a component")
        yield


def _root_metadata(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise StoreError(f"no run store at {path}: the path does not exist")
    meta_path = path / "zarr.json"
    if not path.is_dir() or not meta_path.is_file():
        raise StoreError(f"{path} is not a run store (no zarr v3 group metadata {meta_path.name})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise StoreError(f"{path} is not a run store: cannot read {meta_path} ({err})") from None
    if not isinstance(meta, dict) or meta.get("node_type") != "group" or meta.get("zarr_format") != 3:
        raise StoreError(f"{path} is not a run store (its zarr.json is not a zarr v3 group)")
    return meta


def check_store(path: str | os.PathLike) -> dict[str, Any]:
    """Root attributes of the run store at ``path``; StoreError when it is not one of schema
    "dynamics.run/1" (missing path, not a zarr v3 group, foreign or newer schema)."""
    path = Path(path)
    return _checked_attrs(path, _root_metadata(path))


def _checked_attrs(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The attributes of root metadata ``meta`` of ``path``, after the schema check of :func:`check_store`."""
    attrs = meta.get("attributes", {})
    found = attrs.get("schema")
    if found is None:
        raise StoreError(f"{path} is a zarr group but not a dynamics run store (no 'schema' attribute)")
    if found != schema.SCHEMA:
        raise StoreError(f"{path} has schema {found!r}; this version of dynamics reads {schema.SCHEMA!r} only")
    validate.root_attributes(attrs, path)
    return attrs


def _open_group(path: Path, group: str, consolidated: bool) -> Any:
    import xarray as xr
    return xr.backends.ZarrStore.open_group(str(path), group=group, mode="r", consolidated=consolidated,
                                            zarr_format=3)


def _committed_dataset(path: Path, group: str, names: list[str], rows: int | None, consolidated: bool) -> Any:
    """Dataset of the variables ``names`` of ``group``, each cut to its first ``rows`` rows (None: all),
    CF-decoded; every chunk file of those rows checked to exist, read errors naming their chunk."""
    import xarray as xr
    from xarray.core import indexing
    try:
        store = _open_group(path, group, consolidated)
    except Exception as err:
        raise StoreError(f"store {path}: group {group!r} cannot be opened ({type(err).__name__}: {err}); its "
                         f"zarr.json is missing or damaged") from None
    try:
        variables = {}
        for name in names:
            try:
                variable = store.open_store_variable(name)
            except Exception as err:
                raise StoreError(f"store {path}: variable {group}/{name} cannot be opened ({type(err).__name__}: "
                                 f"{err}); its zarr.json is missing or damaged") from None
            inner = variable._data.array   # xarray's lazily indexed ZarrArrayWrapper
            validate.check_chunks(path, group, name, inner._array, rows)
            variable = xr.Variable(variable.dims, indexing.LazilyIndexedArray(
                validate.NamedChunks(inner, path, group, name)), variable.attrs, variable.encoding)
            if rows is not None:
                variable = variable.isel({schema.ROW_DIM[group]: slice(0, rows)})
            variables[name] = variable
    finally:
        store.close()
    return xr.decode_cf(xr.Dataset(variables))


ANALYSIS = "analysis"
ANALYSIS_MODES = ("fresh", "omit")


def open_run(path: str | os.PathLike, *, analysis: str = "fresh") -> Any:
    """The run store at ``path`` as an ``xarray.DataTree`` holding committed data only (lazily loaded).

    Children: ``metrics`` (dim step), ``checkpoints`` and ``params`` (dim checkpoint), ``probe``, and any
    other group written into the store later (e.g. ``analysis``), as stored. Root attributes are the
    store's (``config``, ``versions``, ``committed`` and ``nonfinite`` are JSON strings).

    ``analysis``: "fresh" (default) — an ``analysis`` group is included only when it was computed from
    the store's current committed data (its ``source`` token, :mod:`dynamics.store.freshness`); a stale
    one (the run was resumed, truncated or rewritten since) raises StoreError naming the reason, so a
    stale analysis is never served silently (``analysis.analyze`` / ``dynamics analyze`` recompute it;
    ``analysis.open_runs`` does so itself). "omit" — leave any ``analysis`` group out, unchecked (for
    readers of the training data only).

    Raises StoreError for a path that is not a run store of schema "dynamics.run/1" and for a stale
    analysis; ValueError for another ``analysis`` mode.
    """
    import xarray as xr
    if analysis not in ANALYSIS_MODES:
        raise ValueError(f"analysis must be one of {ANALYSIS_MODES}, got {analysis!r}")
    path = Path(path)
    meta = _root_metadata(path)
    attrs = _checked_attrs(path, meta)
    committed = validate.committed(attrs, path)
    consolidated = "consolidated_metadata" in meta
    nodes: dict[str, Any] = {"/": xr.Dataset(attrs=attrs)}
    with quiet_zarr_warnings():
        for group in schema.ROW_DIM:
            rows = schema.committed_rows(committed, group)
            dataset = _committed_dataset(path, group, committed["variables"][group], rows, consolidated)
            if group != "metrics" and schema.checkpoint_coords(committed) == schema.LEGACY_CHECKPOINT_COORDS:
                dataset = dataset.rename(dict(zip(schema.LEGACY_CHECKPOINT_COORDS[1:], schema.CHECKPOINT_COORDS[1:])))
            nodes[f"/{group}"] = dataset
        probe_names = sorted(p.name for p in (path / "probe").iterdir() if (p / "zarr.json").is_file())
        nodes["/probe"] = _committed_dataset(path, "probe", probe_names, None, consolidated)
        for child in sorted(p.name for p in path.iterdir() if (p / "zarr.json").is_file()):
            if child in schema.ROW_DIM or child == "probe" or (child == ANALYSIS and analysis == "omit"):
                continue
            # Groups written after training (``analysis``) are replaced as a whole: read their own
            # metadata, never the root's consolidated copy, which a killed rewrite may have left stale.
            dataset = xr.open_dataset(path, group=child, engine="zarr", consolidated=False, zarr_format=3,
                                      chunks=None)
            if child == ANALYSIS:
                _check_fresh(path, dataset)
            nodes[f"/{child}"] = dataset
    return xr.DataTree.from_dict(nodes)


def _check_fresh(path: Path, dataset: Any) -> None:
    """StoreError when the analysis ``dataset`` of store ``path`` was not computed from its current data."""
    from dynamics.store.freshness import recorded_source, source_token, staleness
    why = staleness(recorded_source(dataset.attrs), source_token(path))
    if why is not None:
        dataset.close()
        raise StoreError(f"{path}: its analysis group is out of date ({why}); recompute it with "
                         f"`dynamics analyze` or analysis.analyze, or open the run without it: "
                         f"open_run(path, analysis=\"omit\")")
