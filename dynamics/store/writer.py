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

Appends run on a writer thread (one batch in flight at a time), so writing overlaps training. A
failure of the store (a full disk) keeps the batch until its write succeeded; a new variable that
cannot be created is left out of the commit, so it never holds up the rows of the others
(:mod:`dynamics.store.batch`, :class:`RunWriter`).
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from dynamics.errors import StoreError
from dynamics.store import root as root_record
from dynamics.store import schema, validate
from dynamics.store.batch import Batch, NewArray, check_columns, clearing_previous, plan_rows
from dynamics.store.chunks import RowArray
from dynamics.store.create import create_store
from dynamics.store.freshness import DERIVED_GROUPS, retire_derived
from dynamics.store.lock import StoreLock, sweep_temporary
from dynamics.store.names import NAME_ATTR, Stored
from dynamics.store.probe import input_names, read_inputs
from dynamics.store.reader import check_store, quiet_zarr_warnings


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
    """Delete temporary files (``*.partial``) that a killed write left behind."""
    for partial in path.rglob("*.partial"):
        partial.unlink(missing_ok=True)


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
        self._batch: Batch | None = None  # in flight, or failed and waiting to be written again
        self._labels: dict[tuple[str, str], str] = {}   # (group, key) → the user's name (attribute "name")
        self._unreported: list[str] = []   # variables a committed batch left out, not yet raised
        #: what this writer could not store (variables left out of a commit): the store ends "failed"
        self.lost: list[str] = []
        self.closed = False
        self._derived = any((path / name).exists() for name in DERIVED_GROUPS)   # removed before data change

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(cls, path: str | os.PathLike, *, config: dict | None, probe_x: Any,
               probe_y: np.ndarray, attrs: dict[str, Any] | None = None,
               probe_index: np.ndarray | None = None) -> RunWriter:
        """Create a new store at ``path`` (atomically: built aside, then renamed into place) and lock it.

        ``probe_x``: the probe's model inputs as numpy arrays in the structure the model takes (an
        array, a tuple or a dict of arrays; laid out by :mod:`dynamics.store.probe`).
        ``attrs``: further root attributes (JSON values), e.g. ``params`` (:data:`schema.PARAMS_MODES`),
        ``optimizer``, ``seed``, ``preset``. ``probe_index``: (probe,) int64 positions of the probe
        samples in the data set, stored as ``probe/probe_index`` (:func:`dynamics.store.create.create_store`)."""
        path = Path(path)
        return cls(path, create_store(path, config, probe_x, probe_y, attrs or {}, probe_index))

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

    def read_probe(self) -> tuple[Any, np.ndarray]:
        """(the probe's model inputs in their structure, :func:`dynamics.store.probe.read_inputs`; y)."""
        names = [p.name for p in sorted((self.path / "probe").iterdir()) if (p / "zarr.json").is_file()]
        arrays = {name: RowArray.open(self.path / "probe" / name) for name in input_names(names)}
        x = read_inputs({n: a.read_rows(a.shape[0]) for n, a in arrays.items()},
                        {n: a.document.get("attributes", {}) for n, a in arrays.items()})
        return x, self._read_probe_array("y")

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
    def _run(self, batch: Batch) -> None:
        """The write of ``batch`` (on the writer thread, or again on the caller's after a failure):
        :meth:`dynamics.store.batch.Batch.run` — new arrays (the rows before a new variable's first row
        hold the fill value, so every chunk of the committed range has a file, as the readers check),
        the rows, the commit record, then ``after``. Derived groups (an analysis) go first
        (:meth:`_retire_derived`)."""
        self._retire_derived()

        def created(target: NewArray, array: RowArray) -> None:
            self._arrays[(target.group, target.name)] = array
            self._nodes[f"{target.group}/{target.name}"] = array.document

        def forget(group: str, name: str) -> None:
            self._arrays.pop((group, name), None)
            self._nodes.pop(f"{group}/{name}", None)

        def write_root(committed: dict, attrs: dict) -> None:
            root_record.write_root(self.path, self._document(attrs, committed))
        batch.run(self.path, created, forget, write_root)

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
        for (group, name), err in batch.dropped.items():
            label = self._labels.get((group, name))
            text = (f"{self.path}: {group}/{name}" + (f" ({label!r})" if label is not None and label != name else "")
                    + f" could not be created ({type(err).__name__}: {err}); {batch.what} was committed without it")
            self.lost.append(text)
            self._unreported.append(text)
        if raise_errors and self._unreported:
            texts, self._unreported = self._unreported, []
            raise StoreError("; ".join(texts))

    def report(self) -> None:
        """Without waiting: raise what a finished write has to say — StoreError for its failure (the
        batch is kept; the next ``wait`` writes it again) or for variables it had to leave out of its
        commit — each once."""
        batch = self._batch
        if (batch is not None and batch.future is not None and batch.future.done()) or self._unreported:
            self.wait()

    def label(self, group: str, key: str, name: str) -> None:
        """Store ``name`` (the user's) as attribute ``name`` of variable ``group/key`` when it is created."""
        self._labels[(group, key)] = name

    def existing(self, group: str) -> dict[str, Stored]:
        """Committed variables of ``group`` but its coordinates: key → :class:`dynamics.store.names.Stored`
        (the user's name as stored in attribute ``name``, or None; dimensions and shape per row)."""
        coords = set(schema.METRICS_COORDS if group == "metrics" else schema.checkpoint_coords(self.committed))
        out = {}
        for key in self.committed["variables"][group]:
            meta = self._nodes.get(f"{group}/{key}", {})
            if key not in coords:
                label = meta.get("attributes", {}).get(NAME_ATTR)
                out[key] = Stored(label if isinstance(label, str) else None,
                                  tuple(meta.get("dimension_names", ())[1:]), tuple(meta.get("shape", ())[1:]))
        return out

    def _submit(self, what: str, plan: list, changes: dict, nonfinite: dict, wait: bool,
                after: list | None = None) -> None:
        committed = dict(self.committed, **changes)
        attrs = dict(self.attrs, committed=json.dumps(committed), nonfinite=json.dumps(nonfinite))
        batch = Batch(what, plan, committed, nonfinite, attrs, after)
        self._batch = batch
        batch.future = self._executor.submit(self._run, batch)
        if wait:
            self.wait()

    # ----------------------------------------------------------------- appends
    def _check_columns(self, group: str, columns: dict[str, tuple[tuple[str, ...], np.ndarray]],
                       ahead: dict[str, tuple[tuple[str, ...], np.ndarray]] | None = None) -> dict:
        """:func:`dynamics.store.batch.check_columns` of ``group`` in this store (against the committed
        variables, else the batch in flight or kept, else ``ahead``)."""
        created = self._batch.created if self._batch is not None else {}
        return check_columns(group, columns, self.committed, self._array, created, ahead)

    def _plan_rows(self, group: str, columns: dict[str, tuple[tuple[str, ...], np.ndarray]], n_new: int) -> tuple:
        """:func:`dynamics.store.batch.plan_rows` of ``group`` in this store: (names, plan)."""
        return plan_rows(group, columns, n_new, self.committed, self._array, self._labels)

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
                    after = clearing_previous(variables[group], group_plan)
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
        for group in schema.ROW_DIM:
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
        they are dropped and the status is "failed", never "complete", with the write's error; so is it
        when a commit had to leave a variable out (:attr:`lost`)."""
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
            if self.lost:                 # committed without some variables: never "complete"
                lost = "; ".join(self.lost)
                status = "failed" if status == "complete" else status
                error = f"{error}; also: {lost}" if error else lost
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
