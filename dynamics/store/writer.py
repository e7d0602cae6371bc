"""Appending writer of a run store (layout in :mod:`dynamics.store.schema`), crash-safe by ordering.

Every append first grows all arrays of the group that lack room (``resize``, in blocks: most appends
find room and rewrite no array metadata), then writes every new row of every
variable (NaN where a name has no value), and only then rewrites the root attribute ``committed``.
zarr's local store writes each file through a temporary file and a rename, so each chunk and each
``zarr.json`` is either the old or the new version; a process killed at any moment leaves a store
whose committed rows are intact. Uncommitted rows (and variables) may be visible to a plain reader
until the store is resumed, which trims them; :func:`dynamics.store.open_run` never shows them.
At close every row array is cut to its committed length (its spare chunks were never written, unless
a write failed: then they are deleted), then metadata is consolidated; the next writer removes the
consolidated metadata before it changes anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.core.buffer import Buffer
from zarr.core.sync import sync as zarr_sync  # runs a coroutine on zarr's own event loop
from zarr.storage import LocalStore

from dynamics.errors import StoreError
from dynamics.store import schema
from dynamics.store.lock import StoreLock
from dynamics.store.reader import check_store, quiet_zarr_warnings

_FILL = {"i": -1, "u": 0, "f": np.nan, "b": False}


def _versions() -> dict[str, str]:
    import torch
    import xarray

    import dynamics
    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "xarray": xarray.__version__, "zarr": zarr.__version__, "dynamics": dynamics.__version__}


# zarr runs every file read, file write, compression and decompression of a chunk as a task on a
# worker thread. A checkpoint touches a few dozen small chunks, and in a training loop the worker
# threads are asleep between checkpoints: waking one costs more than the work it is handed
# (benchmarks/recorder_overhead.py: a checkpoint's writes took about 20 ms with the hand-offs and
# 7 ms without). The writer therefore runs that work in zarr's event-loop thread itself. The bytes on
# disk and the metadata are zarr's own, so any zarr reader opens the store.

#: Runtime settings of every array the writer touches: write each chunk as given, without first
#: comparing it with the fill value (a writer's rows are data; the comparison only costs time).
_ARRAY_CONFIG = {"write_empty_chunks": True}


class _InlineLocalStore(LocalStore):
    """zarr's LocalStore, reading and writing files in the calling (event-loop) thread through its
    ``get_sync``/``set_sync`` (a write goes to a temporary file, then a rename, as ``set`` does)."""

    async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Buffer | None:
        return self.get_sync(key, prototype=prototype, byte_range=byte_range)

    async def set(self, key: str, value: Buffer) -> None:
        self.set_sync(key, value)


class _InlineZstdCodec(ZstdCodec):
    """zarr's zstd codec (same bytes, same metadata ``{"name": "zstd", ...}``), compressing and
    decompressing in the calling thread."""

    async def _encode_single(self, chunk_bytes: Buffer, chunk_spec: Any) -> Buffer | None:
        return self._encode_sync(chunk_bytes, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: Any) -> Buffer:
        return self._decode_sync(chunk_bytes, chunk_spec)


def _for_writing(array: zarr.Array) -> zarr.Array:
    """The same stored array, opened with :class:`_InlineZstdCodec` and :data:`_ARRAY_CONFIG`."""
    meta = array.metadata.to_dict()
    meta["codecs"] = [_InlineZstdCodec(**codec["configuration"]) if codec["name"] == "zstd" else codec
                      for codec in meta["codecs"]]
    return zarr.Array(zarr.AsyncArray(meta, array.store_path, config=_ARRAY_CONFIG))


def _open_root(path: Path) -> zarr.Group:
    return zarr.open_group(_InlineLocalStore(path), mode="r+", zarr_format=3, use_consolidated=False)


def _create_array(group: zarr.Group, name: str, dims: tuple[str, ...], shape: tuple[int, ...],
                  chunks: tuple[int, ...], dtype: Any, attrs: dict | None = None) -> zarr.Array:
    dtype = np.dtype(dtype)
    return group.create_array(name, overwrite=True, shape=shape, chunks=tuple(max(c, 1) for c in chunks), dtype=dtype,
                              fill_value=_FILL.get(dtype.kind, 0), dimension_names=list(dims),
                              attributes=attrs or {}, compressors=_InlineZstdCodec(level=1), config=_ARRAY_CONFIG,
                              chunk_key_encoding={"name": "default", "separator": "."})


#: Rows a row array grows to at least: chunks never written take no space, so a large first block
#: costs nothing and spares most runs any further growth of their checkpoint arrays.
MIN_CAPACITY = 64


def _capacity(current: int, needed: int, chunk: int) -> int:
    """Length to grow a row array to so that it holds ``needed`` rows: at least double ``current``
    and at least :data:`MIN_CAPACITY`, rounded up to a whole number of chunks (growing rewrites the
    array's ``zarr.json``; writing rows inside the capacity writes chunk data only)."""
    target = max(needed, 2 * current, MIN_CAPACITY)
    return -(-target // chunk) * chunk


def _probe_dims(ndim: int, base: str) -> tuple[str, ...]:
    if ndim == 2:
        return ("probe", base)
    return ("probe",) + tuple(f"{base}_{i}" for i in range(ndim - 1))


def _strip_consolidated(path: Path) -> None:
    """Remove consolidated metadata from the root ``zarr.json`` (atomic rewrite), if any."""
    meta_path = path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    if meta.pop("consolidated_metadata", None) is None:
        return
    tmp = meta_path.with_name(f"zarr.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_path)


def _remove_partial_files(path: Path) -> None:
    """Delete temporary files (``*.partial``) that a killed zarr write left behind."""
    for partial in path.rglob("*.partial"):
        partial.unlink(missing_ok=True)


class RunWriter:
    """Writes one run store; obtain it from :meth:`create` or :meth:`resume`, finish with :meth:`close`."""

    def __init__(self, path: Path, root: zarr.Group, lock: StoreLock) -> None:
        self.path, self.root, self._lock = path, root, lock
        self.committed = schema.parse_json_attr(root.attrs, "committed", path)
        self.nonfinite = schema.parse_json_attr(root.attrs, "nonfinite", path)
        self._arrays: dict[tuple[str, str], zarr.Array] = {}
        self._rows_past_committed = False  # a write that failed may have left rows past ``committed``
        self.closed = False

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(cls, path: str | os.PathLike, *, config: dict | None, probe_x: np.ndarray,
               probe_y: np.ndarray) -> RunWriter:
        """Create a new store at ``path`` (atomically: built aside, then renamed into place) and lock it."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise StoreError(f"{path} already exists; open it with resume=True or choose another path")
        try:
            config_json = json.dumps(config if config is not None else {}, sort_keys=True)
        except (TypeError, ValueError) as err:
            raise TypeError(f"config must be JSON-serialisable: {err}") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.parent / f".{path.name}.creating-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            cls._build(staging, config_json, probe_x, probe_y)
            StoreLock(staging).acquire()
            try:
                os.rename(staging, path)
            except OSError:
                raise StoreError(f"{path} was created by another process meanwhile") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        lock = StoreLock(path)
        lock.held = True
        return cls(path, _open_root(path), lock)

    @staticmethod
    def _build(path: Path, config_json: str, probe_x: np.ndarray, probe_y: np.ndarray) -> None:
        root = zarr.create_group(str(path), zarr_format=3)
        metrics = root.create_group("metrics")
        _create_array(metrics, "step", ("step",), (0,), (schema.METRICS_CHUNK,), np.int64)
        _create_array(metrics, "epoch", ("step",), (0,), (schema.METRICS_CHUNK,), np.float64)
        for name in ("checkpoints", "params"):
            group = root.create_group(name)
            _create_array(group, "checkpoint", ("checkpoint",), (0,), (1,), np.int64)
            _create_array(group, "step", ("checkpoint",), (0,), (1,), np.int64)
            _create_array(group, "epoch", ("checkpoint",), (0,), (1,), np.float64)
        probe = root.create_group("probe")
        for name, data, base in (("x", probe_x, "feature"), ("y", probe_y, "output")):
            dims = ("probe",) if data.ndim == 1 else _probe_dims(data.ndim, base)
            array = _create_array(probe, name, dims, data.shape, data.shape, data.dtype)
            array[...] = data
        root.update_attributes({"schema": schema.SCHEMA, "config": config_json, "versions": json.dumps(_versions()),
                           "status": "running", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "committed": json.dumps(schema.empty_committed()), "nonfinite": json.dumps({})})

    @classmethod
    def resume(cls, path: str | os.PathLike) -> RunWriter:
        """Lock an existing store, drop stale consolidated metadata, trim what lies past ``committed``.

        The status is left as it was; the caller sets it (``set_attrs(status="running")``)."""
        path = Path(path)
        check_store(path)
        lock = StoreLock(path).acquire()
        try:
            _remove_partial_files(path)
            _strip_consolidated(path)
            writer = cls(path, _open_root(path), lock)
            writer._trim_to_committed(delete_rows=True)   # a killed writer may have left rows past the mark
        except BaseException:
            lock.release()
            raise
        return writer

    def _trim_to_committed(self, delete_rows: bool) -> None:
        """Cut every row array to its committed length and delete uncommitted variables.

        ``delete_rows``: also delete the chunk files past the committed rows. Needed where rows may
        have been written there (after a kill, a truncation or a failed write batch); otherwise the
        files do not exist and looking for each one would cost a file-system call per spare row."""
        self._arrays.clear()
        resized = []
        with quiet_zarr_warnings():
            for group_name in schema.ROW_DIM:
                group = self.root[group_name]
                keep = set(self.committed["variables"][group_name])
                rows = self._rows(group_name)
                for name, array in list(group.arrays()):
                    if name not in keep:
                        del group[name]
                    elif array.shape[0] != rows:
                        resized.append(array.async_array.resize((rows,) + array.shape[1:], delete_rows))

        async def run() -> None:
            await asyncio.gather(*resized)
        zarr_sync(run())
        if delete_rows:
            self._rows_past_committed = False

    # ----------------------------------------------------------------- state
    def _rows(self, group: str) -> int:
        return schema.committed_rows(self.committed, group)

    def _array(self, group: str, name: str) -> zarr.Array:
        key = (group, name)
        if key not in self._arrays:
            self._arrays[key] = _for_writing(self.root[group][name])
        return self._arrays[key]

    def variables(self, group: str) -> list[str]:
        """Committed variable names of ``group`` (coordinates included)."""
        return list(self.committed["variables"][group])

    def stored_steps(self, group: str) -> np.ndarray:
        """The committed ``step`` coordinate of ``group`` ("metrics" or "checkpoints")."""
        return np.asarray(self._array(group, "step")[: self._rows(group)], dtype=np.int64)

    def read_probe(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.root["probe"]["x"][...]), np.asarray(self.root["probe"]["y"][...])

    def read_config(self) -> dict:
        return schema.parse_json_attr(self.root.attrs, "config", self.path)

    def _commit(self, **changes: Any) -> None:
        self.committed.update(changes)
        self.root.update_attributes({"committed": json.dumps(self.committed), "nonfinite": json.dumps(self.nonfinite)})

    def _write_and_commit(self, plan: list, **changes: Any) -> None:
        """Write a batch (:meth:`_grow_then_write`), then commit ``changes``; if either fails, rows
        past the mark may exist, and closing deletes them."""
        try:
            self._grow_then_write(plan)
            self._commit(**changes)
        except BaseException:
            self._rows_past_committed = True
            raise

    # ----------------------------------------------------------------- appends
    def _plan_rows(self, group: str, columns: dict[str, tuple[tuple[str, ...], np.ndarray]], n_new: int) -> tuple:
        """Validate and create what growing ``group`` by ``n_new`` rows needs; returns (names, plan).

        ``columns`` maps names to (dims after the row dim, data with ``n_new`` leading rows); committed
        variables missing from it get their fill value (NaN for floats). New names are created here.
        """
        rows = self._rows(group)
        names = self.variables(group)
        row_dim = schema.ROW_DIM[group]
        coords = "epoch" if group == "metrics" else "step epoch"
        for name, (dims, data) in columns.items():
            if name in names and self._array(group, name).shape[1:] != data.shape[1:]:
                raise StoreError(f"{group}/{name} has shape {self._array(group, name).shape[1:]} per row in the "
                                 f"store, got {data.shape[1:]}")
        for name, (dims, data) in columns.items():
            if name in names:
                continue
            chunks = (schema.METRICS_CHUNK,) if group == "metrics" else (1,) + data.shape[1:]
            attrs = {} if name in ("step", "epoch", "checkpoint") else {"coordinates": coords}
            length = _capacity(rows, rows + n_new, chunks[0])   # created with room: no resize at once
            self._arrays[(group, name)] = _create_array(self.root[group], name, (row_dim,) + dims,
                                                        (length,) + data.shape[1:], chunks, data.dtype, attrs)
            names.append(name)
        plan = []
        for name in names:
            array = self._array(group, name).async_array
            value = columns[name][1] if name in columns else np.full(
                (n_new,) + array.shape[1:], _FILL.get(np.dtype(array.dtype).kind, 0), dtype=array.dtype)
            plan.append((array, rows, n_new, value))
        return names, plan

    @staticmethod
    def _grow_then_write(plan: list) -> None:
        """Grow every planned array, then write its new rows: one concurrent batch on zarr's loop.

        Each array is resized before its own rows are written; arrays do not wait for each other.
        Arrays grow in blocks (see :func:`_capacity`), so most appends rewrite no array metadata;
        rows past ``committed`` are ignored by readers and cut off at close and on resume.
        Nothing here is visible as committed: ``committed`` is rewritten only after the batch.
        """
        async def grow_write(a: Any, rows: int, n: int, v: np.ndarray) -> None:
            if a.shape[0] < rows + n:
                await a.resize((_capacity(a.shape[0], rows + n, a.chunks[0]),) + a.shape[1:])
            await a.setitem(slice(rows, rows + n), v)

        async def run() -> None:
            await asyncio.gather(*(grow_write(*item) for item in plan))
        zarr_sync(run())

    def append_metrics(self, steps: np.ndarray, epochs: np.ndarray, scalars: dict[str, np.ndarray]) -> None:
        """Append rows: ``steps`` (k,) int64 strictly increasing after the stored ones, ``epochs`` (k,),
        ``scalars`` name → (k,) float64. Then commit them."""
        steps = np.asarray(steps, dtype=np.int64)
        if steps.size == 0:
            return
        last = self.committed["step"]
        if (last is not None and steps[0] <= last) or np.any(np.diff(steps) <= 0):
            raise StoreError(f"metrics steps must increase strictly: got {steps[:5].tolist()}... after {last}")
        columns = {"step": ((), steps), "epoch": ((), np.asarray(epochs, dtype=np.float64))}
        columns.update({name: ((), np.asarray(v, dtype=np.float64)) for name, v in scalars.items()})
        names, plan = self._plan_rows("metrics", columns, len(steps))
        variables = dict(self.committed["variables"], metrics=names)
        self._write_and_commit(plan, metrics=self.committed["metrics"] + len(steps), step=int(steps[-1]),
                               variables=variables)

    def append_checkpoint(self, step: int, epoch: float, scalars: dict[str, float],
                          checkpoint_arrays: dict[str, tuple[tuple[str, ...], np.ndarray]],
                          param_arrays: dict[str, tuple[tuple[str, ...], np.ndarray]]) -> None:
        """Append one checkpoint (scalars, NTK/representations, parameters) in one write batch, then
        commit it."""
        last = self.committed["checkpoint_step"]
        if last is not None and step <= last:
            raise StoreError(f"checkpoint step {step} is not after the last stored checkpoint step {last}")
        index = self.committed["checkpoint"]
        coords = {"checkpoint": ((), np.array([index], dtype=np.int64)), "step": ((), np.array([step], dtype=np.int64)),
                  "epoch": ((), np.array([epoch], dtype=np.float64))}
        cols = dict(coords)
        cols.update({name: ((), np.array([v], dtype=np.float64)) for name, v in scalars.items()})
        cols.update({name: (dims, data[None]) for name, (dims, data) in checkpoint_arrays.items()})
        params = dict(coords)
        params.update({name: (dims, data[None]) for name, (dims, data) in param_arrays.items()})
        variables = dict(self.committed["variables"])
        variables["checkpoints"], plan_c = self._plan_rows("checkpoints", cols, 1)
        variables["params"], plan_p = self._plan_rows("params", params, 1)
        self._write_and_commit(plan_c + plan_p, checkpoint=index + 1, checkpoint_step=int(step), variables=variables)

    # ----------------------------------------------------------------- truncate / close
    def truncate(self, step: int) -> None:
        """Drop metrics rows and checkpoints with step > ``step``: mark first, then shrink the arrays."""
        m_steps, ck_steps = self.stored_steps("metrics"), self.stored_steps("checkpoints")
        keep_m = int(np.searchsorted(m_steps, step, side="right"))
        keep_c = int(np.searchsorted(ck_steps, step, side="right"))
        for group in ("metrics", "checkpoints"):
            schema.trim_nonfinite(self.nonfinite, group, step)
        self._commit(metrics=keep_m, step=int(m_steps[keep_m - 1]) if keep_m else None,
                     checkpoint=keep_c, checkpoint_step=int(ck_steps[keep_c - 1]) if keep_c else None)
        self._trim_to_committed(delete_rows=True)

    def set_attrs(self, **attrs: Any) -> None:
        self.root.update_attributes(attrs)

    def abandon(self) -> None:
        """Release the lock without touching the store (after a failed check on resume)."""
        self._lock.release()
        self.closed = True

    def close(self, status: str, error: str | None = None) -> None:
        """Set ``status`` (and ``error``), consolidate metadata, release the lock (idempotent)."""
        if self.closed:
            return
        try:
            attrs: dict[str, Any] = {"status": status}
            if error is not None:
                attrs["error"] = error
            self._trim_to_committed(self._rows_past_committed)  # cut the spare capacity: exact shapes for plain readers
            self.root.update_attributes(attrs)
            with quiet_zarr_warnings():
                zarr.consolidate_metadata(str(self.path))
        finally:
            self._lock.release()
            self.closed = True
