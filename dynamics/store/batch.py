"""One write of a run store's writer (:mod:`dynamics.store.writer`): its plan, its run, its failures.

A batch holds, for every variable of the groups it grows, the rows to write — into an array the store
has (:class:`dynamics.store.chunks.RowArray`) or one the batch creates (:class:`NewArray`) — then the
commit record (``committed`` mark and root attributes) that makes them visible, then the rows that the
commit makes redundant (``after``: the previous parameters under ``params="first_last"``).

Failures are of two kinds (:func:`isolated`):

- a failure of one variable: creating a new array fails for a reason of its own (its name, a file in
  the way, a file system that refuses that folder). The batch goes on without it and is committed
  without that variable, so the rows and checkpoints of every other variable are stored;
  :attr:`Batch.dropped` keeps the errors, which the writer raises from its next call and records as
  lost data (the store then ends "failed");
- a failure of the store: a full disk or quota (ENOSPC, EDQUOT), a read-only or failing file system
  (EROFS, EIO), no memory or file handles, any failure of a coordinate, of an array the store already
  holds or of the commit record. The batch stops; nothing of it is committed; the writer keeps it and
  writes it again (every step can be repeated) before anything else.
"""

from __future__ import annotations

import errno
import json
from concurrent.futures import Future
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dynamics.errors import StoreError
from dynamics.store import schema
from dynamics.store.attributes import cf_attrs
from dynamics.store.chunks import FILL, RowArray
from dynamics.store.names import NAME_ATTR

#: Rows a row array grows to at least: chunks never written take no space, so a large first block
#: costs nothing and spares most runs any further growth of their checkpoint arrays.
MIN_CAPACITY = 64
#: errno values of failures of the store's file system as a whole (see the module docstring)
STORE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOMEM, errno.EMFILE,
                          errno.ENFILE})


def isolated(err: BaseException) -> bool:
    """Whether ``err``, raised while creating one new array, concerns that array only."""
    if not isinstance(err, Exception) or isinstance(err, MemoryError):
        return False
    return not (isinstance(err, OSError) and err.errno in STORE_ERRNOS)


def create_array(path: Path, group: str, name: str, dims: tuple[str, ...], shape: tuple[int, ...],
                 chunk_rows: int, dtype: Any, attrs: dict | None = None) -> RowArray:
    """A new array ``group/name`` of store ``path`` (:class:`dynamics.store.chunks.RowArray`, chunks of
    ``chunk_rows`` rows) with the registry's CF attributes (:func:`dynamics.store.attributes.cf_attrs`,
    told the user's name where ``attrs`` holds it) and ``attrs``."""
    attrs = attrs or {}
    attributes = {**cf_attrs(group, name, attrs.get(NAME_ATTR)), **attrs}
    return RowArray.create(path / group / name, dims, shape, chunk_rows, dtype, attributes)


def capacity(current: int, needed: int, chunk: int) -> int:
    """Length to grow a row array to so that it holds ``needed`` rows: at least double ``current``
    and at least :data:`MIN_CAPACITY`, rounded up to a whole number of chunks (growing rewrites the
    array's ``zarr.json``; writing rows inside the capacity writes chunk data only)."""
    target = max(needed, 2 * current, MIN_CAPACITY)
    return -(-target // chunk) * chunk


def grow_then_write(plan: list) -> None:
    """Grow every planned array, then write its new rows, one array after another (the first failure
    stops; nothing is left running).

    ``plan``: (:class:`RowArray`, first row, rows, values) per array. Arrays grow in blocks (see
    :func:`capacity`), so most appends rewrite no array metadata. Nothing here is visible as
    committed: the commit record is replaced only after the batch.
    """
    for array, rows, n, values in plan:
        if array.shape[0] < rows + n:
            array.resize(capacity(array.shape[0], rows + n, array.chunk_rows))
        array.write_rows(rows, values)


class NewArray(NamedTuple):
    """A row array that a batch creates before writing its first rows."""
    group: str
    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunk_rows: int
    dtype: np.dtype
    attrs: dict
    coordinate: bool


def plan_rows(group: str, columns: dict[str, tuple[tuple[str, ...], np.ndarray]], n_new: int, committed: dict,
              open_array: Any, labels: dict[tuple[str, str], str]) -> tuple[list[str], list]:
    """What growing ``group`` by ``n_new`` rows writes; returns (variable names, plan).

    ``columns`` (checked by the writer) maps names to (dims after the row dim, data with ``n_new``
    leading rows); committed variables missing from it get their fill value (NaN for floats).
    ``open_array(group, name)``: a committed variable's :class:`RowArray`. New names are created by
    the batch itself (:class:`NewArray`, on the writer thread), with room for :data:`MIN_CAPACITY`
    rows, and carry the user's name (``labels[(group, name)]``) as attribute :data:`NAME_ATTR`.
    """
    rows = schema.committed_rows(committed, group)
    names = list(committed["variables"][group])
    row_dim = schema.ROW_DIM[group]
    coord_names = schema.METRICS_COORDS if group == "metrics" else schema.checkpoint_coords(committed)
    coords = " ".join(c for c in coord_names if c != row_dim)
    new: dict[str, NewArray] = {}
    for name, (dims, data) in columns.items():
        if name in names:
            continue
        row_bytes = data.dtype.itemsize * int(np.prod(data.shape[1:], dtype=np.int64))
        chunk_rows = schema.METRICS_CHUNK if group == "metrics" else schema.checkpoint_chunk_rows(row_bytes)
        coordinate = name in coord_names
        attrs = {} if coordinate else {"coordinates": coords}
        if (group, name) in labels:
            attrs[NAME_ATTR] = labels[(group, name)]
        length = capacity(rows, rows + n_new, chunk_rows)   # created with room: no resize at once
        new[name] = NewArray(group, name, (row_dim,) + dims, (length,) + data.shape[1:], chunk_rows, data.dtype,
                             attrs, coordinate)
        names.append(name)
    plan = []
    for name in names:
        if name in new:
            plan.append((new[name], rows, n_new, columns[name][1]))
            continue
        array = open_array(group, name)
        value = columns[name][1] if name in columns else np.full(
            (n_new,) + array.shape[1:], FILL.get(array.dtype.kind, 0), dtype=array.dtype)
        plan.append((array, rows, n_new, value))
    return names, plan


def check_columns(group: str, columns: dict[str, tuple[tuple[str, ...], np.ndarray]], committed: dict,
                  open_array: Any, created: dict[tuple[str, str], tuple], ahead: dict | None = None) -> dict:
    """``columns`` with values cast to their stored dtype, after checking shapes and dtypes against
    the committed variables of ``group`` (``open_array(group, name)``), else those a batch in flight
    or kept creates (``created``: (group, name) → (shape per row, dtype)), else the columns ``ahead``
    that an earlier append will write first: StoreError naming the variable for another shape per row,
    or for a dtype that the stored one cannot hold exactly (float64 into float32)."""
    names = set(committed["variables"][group])
    checked = {}
    for name, (dims, data) in columns.items():
        layout = None
        if name in names:
            array = open_array(group, name)
            layout = array.shape[1:], np.dtype(array.dtype)
        elif (group, name) in created:
            layout = created[(group, name)]
        elif ahead and name in ahead:
            layout = ahead[name][1].shape[1:], ahead[name][1].dtype
        if layout is not None:
            shape, stored = layout
            if shape != data.shape[1:]:
                raise StoreError(f"{group}/{name} has shape {shape} per row in the store, got {data.shape[1:]}")
            if data.dtype != stored:
                if not np.can_cast(data.dtype, stored, casting="safe"):
                    raise StoreError(f"{group}/{name} is stored as {stored}, got {data.dtype}: writing it would "
                                     f"lose precision (did the model's dtype change?); record the new dtype into a "
                                     f"new store")
                data = data.astype(stored)
        checked[name] = (dims, data)
    return checked


def clearing_previous(names: list[str], plan: list) -> list:
    """The writes that set each parameter's previous row to NaN once a ``params`` plan of one
    checkpoint is committed ("first_last", :data:`schema.PARAMS_MODES`): (array, row, 1, θ) →
    (array, row − 1, 1, NaN). They run after the commit, so a kill at any moment leaves the latest
    committed parameters in place (and at worst the previous row too)."""
    out = []
    for name, (target, rows, _, value) in zip(names, plan):
        coordinate = name in schema.CHECKPOINT_COORDS or name in schema.LEGACY_CHECKPOINT_COORDS
        if not coordinate and not isinstance(target, NewArray) and value.dtype.kind == "f":
            out.append((target, rows - 1, 1, np.full((1,) + value.shape[1:], np.nan, dtype=value.dtype)))
    return out


class Batch:
    """One write: the new arrays and rows of ``plan``, then the commit record of ``committed``, then
    the writes of ``after`` (see the module docstring).

    It is kept by the writer until it succeeded: a batch whose write failed is written again by the
    next :meth:`RunWriter.wait` (every step of it can be repeated), so no row is lost to a transient
    failure (a full disk)."""

    def __init__(self, what: str, plan: list, committed: dict, nonfinite: dict, attrs: dict,
                 after: list | None = None) -> None:
        self.what, self.plan, self.nonfinite = what, plan, nonfinite
        self._committed, self._attrs = committed, attrs
        self.committed, self.attrs = committed, attrs
        self.after = after or []
        self.future: Future | None = None
        #: (group, name) → the error that kept that new variable out of the commit (its last run)
        self.dropped: dict[tuple[str, str], BaseException] = {}
        #: (group, name) → (shape per row, dtype) of the arrays this batch creates
        self.created = {(t.group, t.name): (tuple(t.shape[1:]), np.dtype(t.dtype))
                        for t, *_ in plan if isinstance(t, NewArray)}

    def run(self, path: Path, created: Any, forget: Any, write_root: Any) -> None:
        """Write the batch into store ``path``: each new array is created (``created(array, first row)``
        is told of it) and written on its own, isolating its failure (:func:`isolated`; ``forget(group,
        name)`` is told of a dropped one); then the rows of the arrays the store has; then
        ``write_root(committed, attrs)``, the commit; then ``after``. A failure of the store raises."""
        plan, dropped = [], {}
        for target, rows, n, value in self.plan:
            if not isinstance(target, NewArray):
                plan.append((target, rows, n, value))
                continue
            try:
                array = create_array(path, target.group, target.name, target.dims, target.shape,
                                     target.chunk_rows, target.dtype, target.attrs)
                array.fill_rows(rows)
                created(target, array)
                grow_then_write([(array, rows, n, value)])
            except BaseException as err:
                if target.coordinate or not isolated(err):
                    raise
                forget(target.group, target.name)
                dropped[(target.group, target.name)] = err
        grow_then_write(plan)
        self._without(dropped)
        write_root(self.committed, self.attrs)
        grow_then_write(self.after)

    def _without(self, dropped: dict[tuple[str, str], BaseException]) -> None:
        """Make the commit of this run leave out the ``dropped`` variables."""
        self.dropped = dropped
        variables = {group: [name for name in names if (group, name) not in dropped]
                     for group, names in self._committed["variables"].items()}
        self.committed = dict(self._committed, variables=variables)
        self.attrs = dict(self._attrs, committed=json.dumps(self.committed))
