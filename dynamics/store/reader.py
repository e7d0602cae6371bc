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
ANALYSIS_MODES = ("fresh", "require", "omit")


def open_run(path: str | os.PathLike, *, analysis: str = "fresh") -> Any:
    """The run store at ``path`` as an ``xarray.DataTree`` holding committed data only (lazily loaded).

    Children: ``metrics`` (dim step), ``checkpoints`` and ``params`` (dim checkpoint), ``probe``, and any
    other group written into the store later (e.g. ``analysis``), as stored. Root attributes are the
    store's (``config``, ``versions``, ``committed`` and ``nonfinite`` are JSON strings).

    ``analysis`` — what to do with a stored ``analysis`` group, which is derived data, correct only for
    the committed data it was computed from (its ``source`` token, :mod:`dynamics.store.freshness`):

    - "fresh" (default): include it when it matches the store's current data; a stale one (the run
      was resumed, truncated or its files changed since) is left out with a
      :class:`~dynamics.errors.StaleAnalysisWarning` saying why, and the training data open as usual
      (``analysis.analyze`` / ``dynamics analyze`` recompute it; ``analysis.open_runs`` does so itself);
    - "require": StoreError unless a current analysis is there (stale or absent);
    - "omit": leave any ``analysis`` group out, unchecked (for readers of the training data only).

    Raises StoreError for a path that is not a run store of schema "dynamics.run/1", for damage (a
    metadata document that is missing, truncated or disagrees with the commit record; a missing chunk
    of the committed rows; a chunk that cannot be decoded, when it is read): one error naming the
    store, the variable and the file (:mod:`dynamics.store.validate`); ValueError for another
    ``analysis`` mode.
    """
    import xarray as xr
    if analysis not in ANALYSIS_MODES:
        raise ValueError(f"analysis must be one of {ANALYSIS_MODES}, got {analysis!r}")
    path = Path(path)
    meta = _root_metadata(path)
    attrs = _checked_attrs(path, meta)
    committed = validate.committed(attrs, path)
    validate.check_documents(path, meta, committed)
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
        children = sorted(p.name for p in path.iterdir() if (p / "zarr.json").is_file())
        if analysis == "require" and ANALYSIS not in children:
            raise StoreError(f"store {path} has no analysis group; compute it with `dynamics analyze {path}` "
                             f"or analysis.analyze")
        for child in children:
            if child in schema.ROW_DIM or child == "probe" or (child == ANALYSIS and analysis == "omit"):
                continue
            dataset = _derived_group(path, child)
            if child == ANALYSIS and not _fresh(path, dataset, committed, analysis):
                continue
            nodes[f"/{child}"] = dataset
    return xr.DataTree.from_dict(nodes)


def _derived_group(path: Path, child: str) -> Any:
    """Group ``child`` written after training (``analysis``: small, loaded at once): groups that are
    replaced as a whole are read from their own metadata, never from the root's consolidated copy,
    which a killed rewrite may have left behind. StoreError naming the group's file, or the variable
    and chunk file, when it cannot be read."""
    import xarray as xr
    hint = (f"`dynamics analyze {path}` writes the analysis again; open_run(path, analysis=\"omit\") opens "
            f"the training data")
    try:
        dataset = xr.open_dataset(path, group=child, engine="zarr", consolidated=False, zarr_format=3, chunks=None)
    except Exception as err:
        raise StoreError(f"store {path}: group {child} cannot be opened ({type(err).__name__}: {err}); its "
                         f"metadata under {path / child} is missing or damaged ({hint})") from None
    try:
        return dataset.load()
    except Exception as err:
        dataset.close()
        import zarr
        group = zarr.open_group(str(path / child), mode="r", zarr_format=3, use_consolidated=False)
        for name, array in group.arrays():
            bad = validate.first_bad_chunk(path, child, name, array)
            if bad is not None:
                raise StoreError(f"{bad} ({hint})") from None
        raise StoreError(f"store {path}: group {child} cannot be read ({type(err).__name__}: {err}); {hint}") from None


def _fresh(path: Path, dataset: Any, committed: dict[str, Any], mode: str) -> bool:
    """Whether the analysis ``dataset`` of store ``path`` was computed from its current data. A stale
    one: StoreError in mode "require", else a StaleAnalysisWarning (and False). When the committed mark
    is unchanged but the files differ, the chunks are decoded first, so damage is named as damage."""
    from dynamics.errors import StaleAnalysisWarning
    from dynamics.store.freshness import recorded_source, source_token, staleness
    recorded, current = recorded_source(dataset.attrs), source_token(path)
    why = staleness(recorded, current)
    if why is None:
        return True
    dataset.close()
    if recorded is not None and recorded.get("committed") == current.get("committed"):
        validate.check_decodable(path, committed)   # a damaged chunk, not new data: StoreError naming it
    message = (f"{path}: its analysis group is out of date ({why})")
    if mode == "require":
        raise StoreError(f"{message}; recompute it with `dynamics analyze` or analysis.analyze, or open the run "
                         f"without it: open_run(path, analysis=\"omit\")")
    warnings.warn(f"{message}; it is left out (recompute it with `dynamics analyze` or analysis.analyze)",
                  StaleAnalysisWarning, stacklevel=3)
    return False
