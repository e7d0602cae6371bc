"""Appending writer of a run store (layout in :mod:`dynamics.store.schema`), crash-safe by ordering.

Every append first grows all arrays of the groups it touches that lack room (``resize``, in blocks:
most appends find room and rewrite no array metadata), then writes every new row of every variable
(NaN where a name has no value), and only then replaces the root ``zarr.json``: the commit record
(:mod:`dynamics.store.root`), which holds the ``committed`` mark and the consolidated metadata of the
committed rows. Each chunk file and array document is written through a temporary file and a rename
(:mod:`dynamics.store.chunks`, which writes the zarr v3 format directly), and the root is replaced the
same way, so a process killed at any moment leaves a store whose committed rows
are intact and whose consolidated metadata shows exactly them to plain xarray. A checkpoint and the
metrics rows logged up to it are one batch with one commit. Rows past ``committed`` (and their
variables) are ignored by every reader, and trimmed on resume and at close.

Appends run on a writer thread (one batch in flight at a time), so writing overlaps training; a
batch is kept until its write succeeded (see :class:`RunWriter`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import zarr

from dynamics.errors import StoreError
from dynamics.store import root as root_record
from dynamics.store import schema, validate
from dynamics.store.attributes import cf_attrs
from dynamics.store.chunks import FILL, RowArray, group_document, write_document
from dynamics.store.freshness import DERIVED_GROUPS, retire_derived
from dynamics.store.lock import StoreLock, abandoned, sweep_temporary
from dynamics.store.reader import check_store, quiet_zarr_warnings


def _versions() -> dict[str, str]:
    import torch
    import xarray

    import dynamics
    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "xarray": xarray.__version__, "zarr": zarr.__version__, "dynamics": dynamics.__version__}


def _create_array(path: Path, group: str, name: str, dims: tuple[str, ...], shape: tuple[int, ...],
                  chunk_rows: int, dtype: Any, attrs: dict | None = None) -> RowArray:
    """A new array ``group/name`` of store ``path`` (:class:`dynamics.store.chunks.RowArray`, chunks of
    ``chunk_rows`` rows) with the registry's CF attributes (:func:`dynamics.store.attributes.cf_attrs`)
    and ``attrs``."""
    attributes = {**cf_attrs(group, name), **(attrs or {})}
    return RowArray.create(path / group / name, dims, shape, chunk_rows, dtype, attributes)


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


def _grow_then_write(plan: list) -> None:
    """Grow every planned array, then write its new rows, one array after another (the first failure
    stops the batch; nothing is left running).

    ``plan``: (:class:`RowArray`, first row, rows, values) per array. Arrays grow in blocks (see
    :func:`_capacity`), so most appends rewrite no array metadata. Nothing here is visible as
    committed: the commit record is replaced only after the batch.
    """
    for array, rows, n, values in plan:
        if array.shape[0] < rows + n:
            array.resize(_capacity(array.shape[0], rows + n, array.chunk_rows))
        array.write_rows(rows, values)


def _sweep_abandoned_creations(path: Path) -> None:
    """Delete ``.NAME.creating-PID`` folders next to ``path`` left by creators that were killed."""
    for staging in path.parent.glob(f".{path.name}.creating-*"):
        if staging.is_dir() and abandoned(staging):
            shutil.rmtree(staging, ignore_errors=True)


def _remove_partial_files(path: Path) -> None:
    """Delete temporary files (``*.partial``) that a killed write left behind."""
    for partial in path.rglob("*.partial"):
        partial.unlink(missing_ok=True)


def _clearing_previous(names: list[str], plan: list) -> list:
    """The writes that set each parameter's previous row to NaN once a ``params`` plan of one
    checkpoint is committed ("first_last", :data:`schema.PARAMS_MODES`): (array, row, 1, θ) →
    (array, row − 1, 1, NaN). They run after the commit, so a kill at any moment leaves the latest
    committed parameters in place (and at worst the previous row too)."""
    out = []
    for name, (target, rows, _, value) in zip(names, plan):
        coordinate = name in schema.CHECKPOINT_COORDS or name in schema.LEGACY_CHECKPOINT_COORDS
        if not coordinate and not isinstance(target, _NewArray) and value.dtype.kind == "f":
            out.append((target, rows - 1, 1, np.full((1,) + value.shape[1:], np.nan, dtype=value.dtype)))
    return out


class _NewArray(NamedTuple):
    """A row array that a batch creates before writing its first rows."""
    group: str
    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunk_rows: int
    dtype: np.dtype
    attrs: dict


class _Batch:
    """One write: the new arrays and rows of ``plan``, then the commit record of ``committed``, then
    the writes of ``after`` (rows of committed data that the commit makes redundant).

    It is kept by the writer until it succeeded: a batch whose write failed is written again by the
    next :meth:`RunWriter.wait` (every step of it can be repeated), so no row is lost to a transient
    failure (a full disk)."""

    def __init__(self, what: str, plan: list, committed: dict, nonfinite: dict, attrs: dict,
                 after: list | None = None) -> None:
        self.what, self.plan, self.committed, self.nonfinite, self.attrs = what, plan, committed, nonfinite, attrs
        self.after = after or []
        self.future: Future | None = None
        #: (group, name) → (shape per row, dtype) of the arrays this batch creates
        self.created = {(t.group, t.name): (tuple(t.shape[1:]), np.dtype(t.dtype))
                        for t, *_ in plan if isinstance(t, _NewArray)}


class RunWriter:
    """Writes one run store; obtain it from :meth:`create` or :meth:`resume`, finish with :meth:`close`.

    Appends (:meth:`append_metrics`, :meth:`append_checkpoint`) run on a writer thread: with
    ``wait=False`` they return once the write is handed over, so it overlaps the caller's work. At
    most one write is in flight; the next append, :meth:`wait`, :meth:`truncate` and :meth:`close`
    wait for it first. A write that fails raises :class:`StoreError` (naming the cause) from the next
    of these calls, and is kept and written again by the one after it.
    """

    def __init__(self, path: Path, lock: StoreLock) -> None:
        self.path, self._lock = path, lock
        self.attrs: dict[str, Any] = dict(json.loads((path / "zarr.json").read_text()).get("attributes", {}))
        self.committed = schema.parse_json_attr(self.attrs, "committed", path)
        self.nonfinite = schema.parse_json_attr(self.attrs, "nonfinite", path)
        self._nodes = root_record.read_nodes(path)
        self._arrays: dict[tuple[str, str], RowArray] = {}
        self._rows_past_committed = False  # a write that failed may have left rows past ``committed``
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"store-writer-{path.name}")
        self._batch: _Batch | None = None  # in flight, or failed and waiting to be written again
        self.closed = False
        self._derived = any((path / name).exists() for name in DERIVED_GROUPS)   # removed before data change

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(cls, path: str | os.PathLike, *, config: dict | None, probe_x: np.ndarray,
               probe_y: np.ndarray, attrs: dict[str, Any] | None = None,
               probe_index: np.ndarray | None = None) -> RunWriter:
        """Create a new store at ``path`` (atomically: built aside, then renamed into place) and lock it.

        ``attrs``: further root attributes (JSON values), e.g. ``params`` (:data:`schema.PARAMS_MODES`),
        ``optimizer``, ``seed``, ``preset``. ``probe_index``: (probe,) int64 positions of the probe
        samples in the data set, stored as ``probe/probe_index``."""
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
            cls._build(staging, config_json, probe_x, probe_y, attrs or {}, probe_index)
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
        return cls(path, lock)

    @staticmethod
    def _build(path: Path, config_json: str, probe_x: np.ndarray, probe_y: np.ndarray, extra: dict,
               probe_index: np.ndarray | None) -> None:
        for group in ("metrics", "checkpoints", "params", "probe"):
            (path / group).mkdir()
            write_document(path / group, group_document())
        _create_array(path, "metrics", "step", ("step",), (0,), schema.METRICS_CHUNK, np.int64)
        _create_array(path, "metrics", "epoch", ("step",), (0,), schema.METRICS_CHUNK, np.float64)
        for group in ("checkpoints", "params"):
            coord_chunk = schema.checkpoint_chunk_rows(8)
            _create_array(path, group, "checkpoint", ("checkpoint",), (0,), coord_chunk, np.int64)
            _create_array(path, group, "checkpoint_step", ("checkpoint",), (0,), coord_chunk, np.int64)
            _create_array(path, group, "checkpoint_epoch", ("checkpoint",), (0,), coord_chunk, np.float64)
        probe_arrays = [("x", probe_x, "feature"), ("y", probe_y, "output")]
        if probe_index is not None:
            probe_arrays.append(("probe_index", probe_index, ""))
        for name, data, base in probe_arrays:
            dims = ("probe",) if data.ndim == 1 else _probe_dims(data.ndim, base)
            _create_array(path, "probe", name, dims, data.shape, data.shape[0], data.dtype).write_rows(0, data)
        attrs = {"schema": schema.SCHEMA, "config": config_json, "versions": json.dumps(_versions()),
                 "status": "running", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "committed": json.dumps(schema.empty_committed()), "nonfinite": json.dumps({}), **extra}
        view = root_record.committed_view(root_record.read_nodes(path), schema.empty_committed())
        root_record.write_root(path, root_record.root_document(attrs, view))

    @classmethod
    def resume(cls, path: str | os.PathLike) -> RunWriter:
        """Lock an existing store, trim what lies past ``committed`` and rewrite the commit record
        (consolidated metadata of the committed view, :mod:`dynamics.store.root`).

        The status is left as it was; the caller sets it (``set_attrs(status="running")``)."""
        path = Path(path)
        check_store(path)
        lock = StoreLock(path).acquire()
        try:
            _remove_partial_files(path)
            sweep_temporary(path, "zarr.json.*.tmp", grace_s=0)           # we hold the lock: all debris
            sweep_temporary(path / "resume", "state.pt.*.tmp", grace_s=0)
            writer = cls(path, lock)
            with quiet_zarr_warnings():   # never extend a damaged store
                root = zarr.open_group(str(path), mode="r", zarr_format=3, use_consolidated=False)
                validate.check_row_arrays(path, root, writer.committed)
            writer._trim_to_committed(delete_rows=True)   # a killed writer may have left rows past the mark
            writer._nodes = root_record.read_nodes(path)
            writer._write_root_now()
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
        for group in schema.ROW_DIM:   # one array at a time: the first failure stops, nothing left running
            keep = set(self.committed["variables"][group])
            rows = self._rows(group)
            for folder in sorted((self.path / group).iterdir()):
                if not folder.is_dir():
                    continue
                if folder.name not in keep:
                    # an uncommitted variable, or the folder of one whose creation was killed before
                    # its zarr.json was in place (the lock keeps other writers out)
                    shutil.rmtree(folder)
                    self._nodes.pop(f"{group}/{folder.name}", None)
                    continue
                if not (folder / "zarr.json").is_file():
                    continue        # a damaged committed variable: left for the readers to report
                array = self._array(group, folder.name)
                if array.shape[0] != rows:
                    array.resize(rows)
                    self._nodes[f"{group}/{folder.name}"] = array.document
                if delete_rows:
                    array.delete_chunks_past(rows)
        if delete_rows:
            self._rows_past_committed = False

    # ----------------------------------------------------------------- state
    def _rows(self, group: str) -> int:
        return schema.committed_rows(self.committed, group)

    def _array(self, group: str, name: str) -> RowArray:
        key = (group, name)
        if key not in self._arrays:
            self._arrays[key] = RowArray.open(self.path / group / name)
        return self._arrays[key]

    def variables(self, group: str) -> list[str]:
        """Committed variable names of ``group`` (coordinates included), after the write in flight."""
        self.wait()
        return list(self.committed["variables"][group])

    def stored_steps(self, group: str) -> np.ndarray:
        """The committed ``step`` coordinate of ``group`` ("metrics" or "checkpoints"), after the
        write in flight."""
        self.wait()
        name = "step" if group == "metrics" else schema.checkpoint_coords(self.committed)[1]
        return self._array(group, name).read_rows(self._rows(group)).astype(np.int64)

    def _read_probe_array(self, name: str) -> np.ndarray:
        array = RowArray.open(self.path / "probe" / name)
        return array.read_rows(array.shape[0])

    def read_probe(self) -> tuple[np.ndarray, np.ndarray]:
        return self._read_probe_array("x"), self._read_probe_array("y")

    def read_probe_index(self) -> np.ndarray | None:
        """The stored ``probe/probe_index``, or None (not given, or a store written before it)."""
        if not (self.path / "probe" / "probe_index" / "zarr.json").is_file():
            return None
        return self._read_probe_array("probe_index")

    def read_config(self) -> dict:
        return schema.parse_json_attr(self.attrs, "config", self.path)

    def _document(self, attrs: dict, committed: dict) -> dict:
        return root_record.root_document(attrs, root_record.committed_view(self._nodes, committed))

    def _write_root_now(self) -> None:
        """Write the commit record of the current state (attributes, committed view) synchronously."""
        attrs = dict(self.attrs, committed=json.dumps(self.committed), nonfinite=json.dumps(self.nonfinite))
        root_record.write_root(self.path, self._document(attrs, self.committed))
        self.attrs = attrs

    # ----------------------------------------------------------------- writing in the background
    def _run(self, batch: _Batch) -> None:
        """The write of ``batch`` (on the writer thread, or again on the caller's after a failure):
        create its new arrays (the rows before a new variable's first row hold the fill value, so every
        chunk of the committed range has a file, as the readers check), write its rows, replace the
        commit record, then write ``after``. Derived groups (an analysis) go first (:meth:`_retire_derived`)."""
        self._retire_derived()
        plan = []
        for target, rows, n, value in batch.plan:
            if isinstance(target, _NewArray):
                key = f"{target.group}/{target.name}"
                array = _create_array(self.path, target.group, target.name, target.dims, target.shape,
                                      target.chunk_rows, target.dtype, target.attrs)
                array.fill_rows(rows)
                self._arrays[(target.group, target.name)] = array
                self._nodes[key] = array.document
                target = array
            plan.append((target, rows, n, value))
        _grow_then_write(plan)
        root_record.write_root(self.path, self._document(batch.attrs, batch.committed))
        _grow_then_write(batch.after)

    @property
    def idle(self) -> bool:
        """True when no write is in flight and none failed: the next append starts at once."""
        batch = self._batch
        return batch is None or (batch.future is not None and batch.future.done()
                                 and batch.future.exception() is None)

    def wait(self, raise_errors: bool = True) -> None:
        """Wait for the write in flight, and write again a batch whose write failed before.

        Raises StoreError naming the store, what was written and the cause when that write fails; the
        batch is kept, and the next ``wait`` (any later append, flush or close) writes it again.
        ``raise_errors=False``: only wait; a failure stays for the next ``wait``."""
        batch = self._batch
        if batch is None:
            return
        try:
            if batch.future is not None:
                future, batch.future = batch.future, None
                future.result()
            elif raise_errors:
                self._run(batch)
            else:
                return
        except Exception as err:
            batch.future = None
            self._rows_past_committed = True
            if not raise_errors:
                return
            raise StoreError(f"{self.path}: writing {batch.what} failed ({type(err).__name__}: {err}); nothing "
                             f"of it is committed, and the next flush or close writes it again") from err
        self.committed, self.nonfinite, self.attrs = batch.committed, batch.nonfinite, batch.attrs
        self._batch = None

    def _submit(self, what: str, plan: list, changes: dict, nonfinite: dict, wait: bool,
                after: list | None = None) -> None:
        committed = dict(self.committed, **changes)
        attrs = dict(self.attrs, committed=json.dumps(committed), nonfinite=json.dumps(nonfinite))
        batch = _Batch(what, plan, committed, nonfinite, attrs, after)
        self._batch = batch
        batch.future = self._executor.submit(self._run, batch)
        if wait:
            self.wait()

    # ----------------------------------------------------------------- appends
    def _check_columns(self, group: str, columns: dict[str, tuple[tuple[str, ...], np.ndarray]],
                       ahead: dict[str, tuple[tuple[str, ...], np.ndarray]] | None = None) -> dict:
        """``columns`` with values cast to their stored dtype, after checking shapes and dtypes against
        the committed variables of ``group`` (else the batch in flight, else the columns ``ahead``
        that an earlier append will write first): StoreError naming the variable for another shape
        per row, or for a dtype that the stored one cannot hold exactly (float64 into float32)."""
        names = set(self.committed["variables"][group])
        checked = {}
        for name, (dims, data) in columns.items():
            layout = None
            if name in names:
                array = self._array(group, name)
                layout = array.shape[1:], np.dtype(array.dtype)
            elif self._batch is not None and (group, name) in self._batch.created:   # in flight, or failed and kept
                layout = self._batch.created[(group, name)]
            elif ahead and name in ahead:
                layout = ahead[name][1].shape[1:], ahead[name][1].dtype
            if layout is not None:
                shape, stored = layout
                if shape != data.shape[1:]:
                    raise StoreError(f"{group}/{name} has shape {shape} per row in the store, got "
                                     f"{data.shape[1:]}")
                if data.dtype != stored:
                    if not np.can_cast(data.dtype, stored, casting="safe"):
                        raise StoreError(f"{group}/{name} is stored as {stored}, got {data.dtype}: writing it "
                                         f"would lose precision (did the model's dtype change?); record the "
                                         f"new dtype into a new store")
                    data = data.astype(stored)
            checked[name] = (dims, data)
        return checked

    def _plan_rows(self, group: str, columns: dict[str, tuple[tuple[str, ...], np.ndarray]], n_new: int) -> tuple:
        """Create what growing ``group`` by ``n_new`` rows needs; returns (names, plan).

        ``columns`` (checked by :meth:`_check_columns`) maps names to (dims after the row dim, data with
        ``n_new`` leading rows); committed variables missing from it get their fill value (NaN for
        floats). New names are created by the batch itself (:class:`_NewArray`, on the writer thread),
        with room for :data:`MIN_CAPACITY` rows.
        """
        rows = self._rows(group)
        names = list(self.committed["variables"][group])
        row_dim = schema.ROW_DIM[group]
        coord_names = schema.METRICS_COORDS if group == "metrics" else schema.checkpoint_coords(self.committed)
        coords = " ".join(c for c in coord_names if c != row_dim)
        new: dict[str, _NewArray] = {}
        for name, (dims, data) in columns.items():
            if name in names:
                continue
            row_bytes = data.dtype.itemsize * int(np.prod(data.shape[1:], dtype=np.int64))
            chunk_rows = schema.METRICS_CHUNK if group == "metrics" else schema.checkpoint_chunk_rows(row_bytes)
            attrs = {} if name in coord_names else {"coordinates": coords}
            length = _capacity(rows, rows + n_new, chunk_rows)   # created with room: no resize at once
            new[name] = _NewArray(group, name, (row_dim,) + dims, (length,) + data.shape[1:], chunk_rows, data.dtype,
                                  attrs)
            names.append(name)
        plan = []
        for name in names:
            if name in new:
                plan.append((new[name], rows, n_new, columns[name][1]))
                continue
            array = self._array(group, name)
            value = columns[name][1] if name in columns else np.full(
                (n_new,) + array.shape[1:], FILL.get(array.dtype.kind, 0), dtype=array.dtype)
            plan.append((array, rows, n_new, value))
        return names, plan

    def _metrics_columns(self, steps: Any, epochs: Any, scalars: dict[str, Any]) -> tuple[dict, np.ndarray]:
        steps = np.asarray(steps, dtype=np.int64)
        last = self.committed["step"]
        if steps.size and ((last is not None and steps[0] <= last) or np.any(np.diff(steps) <= 0)):
            raise StoreError(f"metrics steps must increase strictly: got {steps[:5].tolist()}... after {last}")
        columns = {"step": ((), steps), "epoch": ((), np.asarray(epochs, dtype=np.float64))}
        columns.update({name: ((), np.asarray(v, dtype=np.float64)) for name, v in scalars.items()})
        return columns, steps

    def _with_counts(self, events: Any) -> dict:
        """The ``nonfinite`` record with ``events`` ((group, name, step), …) counted in, as a new dict."""
        record = json.loads(json.dumps(self.nonfinite))
        for group, name, step in events:
            schema.count_nonfinite(record, group, name, step)
        return record

    def append_metrics(self, steps: np.ndarray, epochs: np.ndarray, scalars: dict[str, np.ndarray], *,
                       nonfinite: Any = (), wait: bool = True) -> None:
        """Append rows: ``steps`` (k,) int64 strictly increasing after the stored ones, ``epochs`` (k,),
        ``scalars`` name → (k,) float64; ``nonfinite``: (group, name, step) of values stored as NaN.
        Then commit them (``wait=False``: in the background, see the class docstring)."""
        self.wait()
        columns, steps = self._metrics_columns(steps, epochs, scalars)
        if steps.size == 0:
            return
        columns = self._check_columns("metrics", columns)
        try:
            names, plan = self._plan_rows("metrics", columns, len(steps))
        except OSError as err:
            raise StoreError(f"{self.path}: cannot create a metrics array ({err})") from err
        variables = dict(self.committed["variables"], metrics=names)
        self._submit(f"metrics rows of steps {int(steps[0])}..{int(steps[-1])}", plan,
                     {"metrics": self.committed["metrics"] + len(steps), "step": int(steps[-1]),
                      "variables": variables}, self._with_counts(nonfinite), wait)

    def check_checkpoint(self, scalars: dict[str, float], checkpoint_arrays: dict[str, tuple[tuple[str, ...], np.ndarray]],
                         param_arrays: dict[str, tuple[tuple[str, ...], np.ndarray]],
                         ahead: tuple[dict, dict] | None = None) -> None:
        """Raise the StoreError that :meth:`append_checkpoint` would raise for a column that does not fit
        its committed variable (shape per row, dtype), without writing or waiting for anything.
        ``ahead``: (checkpoint arrays, parameter arrays) of a checkpoint not yet appended that will be
        appended before this one; they fix the layout of variables the store does not hold yet."""
        def rows(arrays: dict) -> dict:
            return {name: (dims, data[None]) for name, (dims, data) in arrays.items()}
        cols = {name: ((), np.array([v], dtype=np.float64)) for name, v in scalars.items()}
        cols.update(rows(checkpoint_arrays))
        self._check_columns("checkpoints", cols, rows(ahead[0]) if ahead else None)
        self._check_columns("params", rows(param_arrays), rows(ahead[1]) if ahead else None)

    def append_checkpoint(self, step: int, epoch: float, scalars: dict[str, float],
                          checkpoint_arrays: dict[str, tuple[tuple[str, ...], np.ndarray]],
                          param_arrays: dict[str, tuple[tuple[str, ...], np.ndarray]], *,
                          metrics: tuple | None = None, nonfinite: Any = (), wait: bool = True) -> None:
        """Append one checkpoint (scalars, NTK/representations, parameters) and, if given, the metrics
        rows ``metrics`` = (steps, epochs, scalars) as in :meth:`append_metrics`, in one write batch,
        then commit them together. Nothing is written unless every column fits its stored variable."""
        self.wait()
        last = self.committed["checkpoint_step"]
        if last is not None and step <= last:
            raise StoreError(f"checkpoint step {step} is not after the last stored checkpoint step {last}")
        index = self.committed["checkpoint"]
        _, step_name, epoch_name = schema.checkpoint_coords(self.committed)
        coords = {"checkpoint": ((), np.array([index], dtype=np.int64)),
                  step_name: ((), np.array([step], dtype=np.int64)),
                  epoch_name: ((), np.array([epoch], dtype=np.float64))}
        cols = dict(coords)
        cols.update({name: ((), np.array([v], dtype=np.float64)) for name, v in scalars.items()})
        cols.update({name: (dims, data[None]) for name, (dims, data) in checkpoint_arrays.items()})
        params = dict(coords)
        params.update({name: (dims, data[None]) for name, (dims, data) in param_arrays.items()})
        m_cols, m_steps = self._metrics_columns(*metrics) if metrics is not None else ({}, np.zeros(0, np.int64))
        groups = {"checkpoints": (self._check_columns("checkpoints", cols), 1),
                  "params": (self._check_columns("params", params), 1)}
        if m_steps.size:
            groups["metrics"] = (self._check_columns("metrics", m_cols), len(m_steps))
        variables, plan, after = dict(self.committed["variables"]), [], []
        try:
            for group, (columns, n_new) in groups.items():
                variables[group], group_plan = self._plan_rows(group, columns, n_new)
                if group == "params" and schema.params_mode(self.attrs) == "first_last" and index >= 2:
                    after = _clearing_previous(variables[group], group_plan)
                plan += group_plan
        except OSError as err:
            raise StoreError(f"{self.path}: cannot create an array of the checkpoint at step {step} ({err})") from err
        changes = {"checkpoint": index + 1, "checkpoint_step": int(step), "variables": variables}
        if m_steps.size:
            changes.update(metrics=self.committed["metrics"] + len(m_steps), step=int(m_steps[-1]))
        self._submit(f"the checkpoint at step {step}", plan, changes, self._with_counts(nonfinite), wait, after)

    # ----------------------------------------------------------------- truncate / close
    def truncate(self, step: int) -> None:
        """Drop metrics rows and checkpoints with step > ``step``: mark first, then shrink the arrays."""
        m_steps, ck_steps = self.stored_steps("metrics"), self.stored_steps("checkpoints")
        keep_m = int(np.searchsorted(m_steps, step, side="right"))
        keep_c = int(np.searchsorted(ck_steps, step, side="right"))
        if keep_m < len(m_steps) or keep_c < len(ck_steps):
            self._retire_derived()
        for group in ("metrics", "checkpoints"):
            schema.trim_nonfinite(self.nonfinite, group, step)
        self.committed = dict(self.committed, metrics=keep_m, step=int(m_steps[keep_m - 1]) if keep_m else None,
                              checkpoint=keep_c, checkpoint_step=int(ck_steps[keep_c - 1]) if keep_c else None)
        self._write_root_now()
        self._trim_to_committed(delete_rows=True)

    def _retire_derived(self) -> None:
        """Before the first change of committed data: remove the store's derived groups (an analysis of
        the data as it was), from the commit record first (:func:`dynamics.store.freshness.retire_derived`)."""
        if not self._derived:
            return
        self._nodes = {key: meta for key, meta in self._nodes.items() if key.split("/")[0] not in DERIVED_GROUPS}
        retire_derived(self.path, self._write_root_now)
        self._derived = False

    def set_attrs(self, **attrs: Any) -> None:
        """Set root attributes (one write of the commit record, after the write in flight)."""
        self.wait()
        self.attrs.update(attrs)
        self._write_root_now()

    def del_attr(self, name: str) -> None:
        """Remove root attribute ``name`` if present (after the write in flight)."""
        self.wait()
        if name in self.attrs:
            del self.attrs[name]
            self._write_root_now()

    def abandon(self) -> None:
        """Release the lock without touching the store (after a failed check on resume)."""
        self._executor.shutdown(wait=True)
        self._lock.release()
        self.closed = True

    def close(self, status: str, error: str | None = None) -> None:
        """Write what is pending, set ``status`` (and ``error``), cut row arrays to their committed length,
        release the lock (idempotent). When pending rows cannot be written (even on a second try),
        they are dropped and the status is "failed", never "complete", with the write's error."""
        if self.closed:
            return
        try:
            try:
                self.wait()
            except StoreError:
                try:
                    self.wait()   # the second try of a batch that failed in the background
                except StoreError as err:
                    self._batch = None
                    status, error = "failed", f"{err}; these rows were dropped"
            attrs: dict[str, Any] = {"status": status}
            if error is not None:
                attrs["error"] = error
            try:
                self._trim_to_committed(self._rows_past_committed)  # cut the spare capacity: exact shapes
                self.attrs.update(attrs)
                self._write_root_now()
            except OSError as err:
                raise StoreError(f"{self.path}: cannot write the final status {status!r} ({err}); the store "
                                 f"keeps its last commit") from err
        finally:
            self._executor.shutdown(wait=True)
            self._lock.release()
            self.closed = True
