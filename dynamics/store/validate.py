"""Checks of what a reader takes from a run store: root attributes, the ``committed`` mark, chunk files.

Damage is reported as :class:`~dynamics.errors.StoreError` naming the store, the variable and, for
data, the chunk (its key and file) — never as a bare KeyError, AttributeError or codec error:

- ``committed`` must be the object of :mod:`dynamics.store.schema` (row counts ints ≥ 0, steps int or
  null, ``variables`` a list of names per row group); ``config`` and ``nonfinite`` JSON objects;
  ``status`` one of the schema's statuses.
- Every chunk file of a committed row of ``metrics``/``checkpoints``/``params`` and of ``probe`` must
  exist: the writer writes every chunk (also chunks equal to the fill value), so a missing one is
  damage, not NaN.
- A chunk that cannot be decoded (truncated, zeroed, corrupted: new stores carry zstd's content
  checksum, so a flipped bit is caught too) raises, when read, a StoreError naming it.
- Every metadata document a reader uses (:func:`check_documents`) must parse as JSON and as zarr v3
  metadata, and each array's own ``zarr.json`` must agree with the store's commit record (the root's
  consolidated metadata, written from the writer's memory at every commit) on everything but the
  shape: a document that was truncated, or whose ``data_type``, chunk grid, codecs or fill value
  were edited, is named (store, variable, file) before zarr reads anything with it.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from xarray.backends import BackendArray

from dynamics.errors import StoreError
from dynamics.store import schema
from dynamics.store.probe import input_names


def _object(attrs: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = schema.parse_json_attr(attrs, key, path)
    if not isinstance(value, dict):
        raise StoreError(f"store {path}: root attribute {key!r} must be a JSON object, got "
                         f"{type(value).__name__} {json.dumps(value)[:60]}")
    return value


def _count(value: Any, what: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreError(f"store {path}: committed.{what} must be an int >= 0, got {value!r}")
    return value


def committed(attrs: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``committed`` mark of root attributes ``attrs``, checked; StoreError naming what is wrong."""
    mark = _object(attrs, "committed", path)
    for key in ("metrics", "step", "checkpoint", "checkpoint_step", "variables"):
        if key not in mark:
            raise StoreError(f"store {path}: committed mark lacks {key!r} (found {sorted(mark)}); the store "
                             f"is damaged")
    _count(mark["metrics"], "metrics", path)
    _count(mark["checkpoint"], "checkpoint", path)
    for key in ("step", "checkpoint_step"):
        if mark[key] is not None:
            _count(mark[key], key, path)
    variables = mark["variables"]
    if not isinstance(variables, dict) or set(variables) != set(schema.ROW_DIM) or not all(
            isinstance(names, list) and all(isinstance(n, str) for n in names) for names in variables.values()):
        raise StoreError(f"store {path}: committed.variables must map {sorted(schema.ROW_DIM)} to lists of "
                         f"names, got {json.dumps(variables)[:80]}")
    return mark


def root_attributes(attrs: dict[str, Any], path: Path) -> None:
    """Check ``config``, ``nonfinite``, ``status`` and ``committed`` of a run store's root attributes."""
    _object(attrs, "config", path)
    _object(attrs, "nonfinite", path)
    if attrs.get("status") not in schema.STATUSES:
        raise StoreError(f"store {path}: status must be one of {list(schema.STATUSES)}, got {attrs.get('status')!r}")
    committed(attrs, path)


#: The keys of an array document that the commit record and the array's own zarr.json must share
#: (the shape may differ: the file holds the writer's capacity, the record the committed rows).
LAYOUT_KEYS = ("data_type", "chunk_grid", "chunk_key_encoding", "codecs", "fill_value", "dimension_names",
               "node_type", "zarr_format")


def read_document(path: Path, file: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``file`` (a ``zarr.json`` of store ``path``); StoreError naming ``what`` (e.g.
    "variable checkpoints/ntk") and the file when it is missing, unreadable, not JSON or not an object."""
    try:
        document = json.loads(file.read_bytes())
    except FileNotFoundError:
        raise StoreError(f"store {path}: {what}: its metadata file {file} is missing") from None
    except (OSError, ValueError) as err:
        raise StoreError(f"store {path}: {what}: its metadata file {file} is damaged ({type(err).__name__}: "
                         f"{err})") from None
    if not isinstance(document, dict):
        raise StoreError(f"store {path}: {what}: its metadata file {file} is damaged (not a JSON object)")
    return document


def _parse_node(path: Path, document: dict[str, Any], what: str, file: Path) -> None:
    """StoreError naming ``what`` and ``file`` unless ``document`` is valid zarr v3 group/array metadata."""
    from zarr.core.group import GroupMetadata
    from zarr.core.metadata.v3 import ArrayV3Metadata
    try:
        if document.get("node_type") == "group":
            GroupMetadata.from_dict({k: v for k, v in document.items() if k != "consolidated_metadata"})
        else:
            ArrayV3Metadata.from_dict(dict(document))
    except Exception as err:
        raise StoreError(f"store {path}: {what}: the metadata in {file} is damaged ({type(err).__name__}: "
                         f"{err})") from None


def check_documents(path: Path, meta: dict[str, Any], mark: dict[str, Any]) -> None:
    """Check the metadata documents of store ``path`` (root metadata ``meta``, committed ``mark``) that
    a reader uses: every entry of the commit record (root ``zarr.json``), and the own ``zarr.json`` of
    each row group, each committed variable and each probe variable, which must agree with its entry
    on :data:`LAYOUT_KEYS`. StoreError naming store, variable and file otherwise."""
    root_file = path / "zarr.json"
    record = (meta.get("consolidated_metadata") or {}).get("metadata") or {}
    if not isinstance(record, dict):
        raise StoreError(f"store {path}: the commit record's consolidated metadata in {root_file} is damaged")
    for key, entry in record.items():
        if not isinstance(entry, dict):
            raise StoreError(f"store {path}: variable {key}: its entry in {root_file} is damaged (not an object)")
        _parse_node(path, entry, f"{'group' if entry.get('node_type') == 'group' else 'variable'} {key} (commit "
                                 f"record)", root_file)
    wanted = [(group, None) for group in (*schema.ROW_DIM, "probe")]
    wanted += [(group, name) for group, names in mark["variables"].items() for name in names]
    # the probe's input variables: x, or x_0 … / x_<key> of a tuple/dict probe (dynamics.store.probe), as
    # the commit record and the folder list them (a missing one is then named)
    folder = path / "probe"
    present = {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()
    present |= {key.split("/", 1)[1] for key in record if key.startswith("probe/")}
    wanted += [("probe", name) for name in (*(sorted(input_names(sorted(present))) or ["x"]), "y")]
    if (folder / "probe_index" / "zarr.json").is_file():
        wanted.append(("probe", "probe_index"))
    for group, name in wanted:
        key = group if name is None else f"{group}/{name}"
        what = f"group {group}" if name is None else f"variable {key}"
        file = path / key / "zarr.json"
        document = read_document(path, file, what)
        _parse_node(path, document, what, file)
        entry = record.get(key)
        if entry is None:
            continue   # a store without a commit record of this node (older layouts)
        for field in LAYOUT_KEYS:
            if document.get(field) != entry.get(field):
                raise StoreError(f"store {path}: {what}: its metadata file {file} says {field} = "
                                 f"{json.dumps(document.get(field))[:80]} where the store's commit record "
                                 f"({root_file}) says {json.dumps(entry.get(field))[:80]}; the file was "
                                 f"edited or damaged")


def _chunk_grid(array: Any) -> tuple[int, ...]:
    """Rows (and extents) of one stored file: the shard shape of a sharded array, else the chunk shape."""
    return tuple(array.shards or array.chunks)


def check_chunks(path: Path, group: str, name: str, array: Any, rows: int | None) -> None:
    """StoreError when a chunk file of the first ``rows`` rows (all rows: None) of the zarr ``array``
    ``group/name`` of store ``path`` is missing, or when the array holds fewer than ``rows`` rows."""
    shape = tuple(array.shape)
    if rows is not None and shape and shape[0] < rows:
        raise StoreError(f"store {path}: {group}/{name} holds {shape[0]} rows but the committed mark says "
                         f"{rows}; the store is damaged")
    extent = shape if rows is None or not shape else (rows,) + shape[1:]
    grid = _chunk_grid(array)
    folder = path / group / name
    present = {os.path.relpath(os.path.join(root, f), folder) for root, _, files in os.walk(folder) for f in files}
    counts = [math.ceil(n / c) for n, c in zip(extent, grid)]
    for coords in itertools.product(*(range(n) for n in counts)):
        key = array.metadata.encode_chunk_key(coords)
        if key not in present:
            raise StoreError(f"store {path}: chunk {key} of {group}/{name} (rows {_rows(coords, grid)}) is missing "
                             f"(file {folder / key}); it lies inside the committed range, so the data is lost")


def _rows(coords: tuple[int, ...], grid: tuple[int, ...]) -> str:
    if not coords:
        return "all"
    first = coords[0] * grid[0]
    return f"{first}–{first + grid[0] - 1}"


class NamedChunks(BackendArray):
    """A lazily read zarr array (xarray's ``ZarrArrayWrapper`` ``inner``) whose read errors become a
    StoreError naming store, variable and the first chunk that fails to decode."""

    def __init__(self, inner: Any, path: Path, group: str, name: str) -> None:
        self.inner, self.path, self.group, self.name = inner, path, group, name
        self.shape, self.dtype = inner.shape, inner.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return self.inner[key]
        except Exception as err:
            raise StoreError(self._describe(err)) from None

    def _describe(self, err: Exception) -> str:
        bad = first_bad_chunk(self.path, self.group, self.name, self.inner._array)
        return bad or f"store {self.path}: {self.group}/{self.name} cannot be read: {type(err).__name__}: {err}"


def first_bad_chunk(path: Path, group: str, name: str, array: Any, rows: int | None = None) -> str | None:
    """The description (store, variable, chunk key, rows, file, error) of the first chunk of the zarr
    ``array`` ``group/name`` of store ``path`` (its first ``rows`` rows; None: all) that cannot be
    decoded, or None when every one decodes."""
    grid = _chunk_grid(array)
    shape = tuple(array.shape)
    extent = shape if rows is None or not shape else (min(rows, shape[0]),) + shape[1:]
    counts = [math.ceil(n / c) for n, c in zip(extent, grid)]
    for coords in itertools.product(*(range(n) for n in counts)):
        region = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(coords, grid, shape))
        try:
            array[region]
        except Exception as chunk_err:
            key = array.metadata.encode_chunk_key(coords)
            return (f"store {path}: chunk {key} of {group}/{name} (rows {_rows(coords, grid)}, "
                    f"file {path / group / name / key}) cannot be read: {type(chunk_err).__name__}: {chunk_err}")
    return None


def check_decodable(path: Path, mark: dict[str, Any]) -> None:
    """Decode every chunk of the committed rows of store ``path`` (and of ``probe``); StoreError naming
    the first that fails (a full read: used only where a store's files changed without a commit)."""
    import zarr
    root = zarr.open_group(str(path), mode="r", zarr_format=3, use_consolidated=False)
    variables = [(group, name, schema.committed_rows(mark, group)) for group, names in mark["variables"].items()
                 for name in names]
    variables += [("probe", name, None) for name in root["probe"].array_keys()]
    for group, name, rows in variables:
        bad = first_bad_chunk(path, group, name, root[group][name], rows)
        if bad is not None:
            raise StoreError(bad)


def check_row_arrays(path: Path, root: Any, mark: dict[str, Any]) -> None:
    """:func:`check_chunks` for every committed variable of the zarr group ``root`` of store ``path``
    (a writer resuming a store checks it before it appends: a damaged store is never extended)."""
    for group, names in mark["variables"].items():
        rows = schema.committed_rows(mark, group)
        for name in names:
            try:
                array = root[group][name]
            except Exception as err:
                raise StoreError(f"store {path}: variable {group}/{name} cannot be opened ({type(err).__name__}: "
                                 f"{err}); its zarr.json is missing or damaged") from None
            check_chunks(path, group, name, array, rows)
