"""What a Recorder holds before the writer has it: buffered metrics rows, and stored checkpoints whose
NTK is still being computed in the background.

:class:`Outbox` is that holding area and its rules:

- Rows (:meth:`Outbox.add_row`) are handed to the writer (:meth:`RunWriter.append_metrics`, one
  commit) every ``flush_every`` rows, once the oldest buffered row has waited ``flush_secs`` seconds
  (:meth:`Outbox.due`, checked at each ``log``/``checkpoint`` call), and on demand.
- A checkpoint is handed over with the rows up to its step that are still buffered, in one commit
  (:meth:`Outbox.append_checkpoint`).
- With ``ntk_background=True`` a stored checkpoint waits as a :class:`PendingCheckpoint` (its
  parameters, representations, scalars, non-finite events and the Future of its kernel,
  :mod:`dynamics.ntk.background`) until its kernel is done. Up to :data:`MAX_PENDING` wait, in step
  order, and are committed strictly in that order (:meth:`Outbox.hand_over`): every Recorder call first
  hands over, without blocking, each one at the head whose kernel is done (one whose kernel failed is
  dropped and its error raised at once); a stored checkpoint blocks only when ``MAX_PENDING`` already
  wait, and then on the oldest; a call that finds a checkpoint waiting ``flush_secs`` waits for it (and
  for the ones before it). The kernels run one at a time on one worker thread, in order, so a kernel's
  error is raised by the first Recorder call after it finished, and at the latest by the stored
  checkpoint ``MAX_PENDING`` stored checkpoints later (or by ``flush``/``close``). The checkpoints do
  not hold the rows back: these are written on the rules above meanwhile (a checkpoint's own commit
  then holds only the rows still buffered).

A kernel that fails drops its checkpoint only: the error is raised with a note naming the step and kept
in :attr:`Outbox.failures`, so the Recorder closes the store "failed".
"""

from __future__ import annotations

import bisect
import math
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from dynamics.convert import to_numpy
from dynamics.errors import StoreError
from dynamics.recorder_values import NonfiniteValues
from dynamics.store.writer import RunWriter

#: Row of the buffer: (step, epoch, values by key, keys of non-finite values).
Row = tuple[int, float, dict[str, float], list[str]]


def rows_columns(rows: list[Row]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], list]:
    """Buffered rows as (steps, epochs, key → column, nonfinite events) for the writer; a key
    missing from a row is NaN there."""
    names = list(dict.fromkeys(name for _, _, values, _ in rows for name in values))
    columns = {name: np.array([values.get(name, math.nan) for _, _, values, _ in rows]) for name in names}
    bad = [("metrics", name, step) for step, _, _, names_bad in rows for name in names_bad]
    return (np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.float64),
            columns, bad)


#: How many stored checkpoints may wait for their background kernels at once (memory: each holds its
#: parameters, representations and a snapshot of the model until handed over). Four absorb the burst of
#: a log-spaced schedule's first checkpoints (steps 0, 1, 2, 3, 5, 8, ...: a kernel takes about 10–20
#: training steps), measured in docs/benchmarks.md ("Recorder after issue 21").
MAX_PENDING = 4


@dataclass
class PendingCheckpoint:
    """One stored checkpoint waiting for its kernel: the writer's arguments but the NTK and the rows,
    the checkpoint's own non-finite events, and an array of the kernel's shape and stored dtype (the
    layout its commit will create)."""
    step: int
    epoch: float
    values: dict[str, float]
    arrays: dict
    params: dict
    events: list
    kernel: Future
    kernel_like: np.ndarray
    #: time.monotonic() when the checkpoint was stored
    since: float = field(default_factory=time.monotonic)

    def with_kernel(self, kernel: np.ndarray) -> dict:
        """The checkpoint's arrays with the NTK first, in the order of a checkpoint computed at once."""
        return {"ntk": (("probe", "probe_"), kernel), **self.arrays}

    def failed(self) -> bool:
        """Whether the kernel is done and raised (never blocks)."""
        return self.kernel.done() and not self.kernel.cancelled() and self.kernel.exception() is not None


class Outbox:
    """The rows and the pending checkpoints of one Recorder (module docstring)."""

    def __init__(self, writer: RunWriter, nonfinite: NonfiniteValues, flush_every: int, flush_secs: float) -> None:
        self._writer, self._nonfinite = writer, nonfinite
        self.flush_every, self.flush_secs = flush_every, flush_secs
        self.rows: list[Row] = []
        self._oldest: float | None = None   # time.monotonic() when the oldest buffered row was logged
        #: the stored checkpoints waiting for their kernels, in step order (at most MAX_PENDING)
        self.pending: list[PendingCheckpoint] = []
        #: the checkpoints dropped because their kernel failed (text naming the error and step)
        self.failures: list[str] = []
        #: steps of the stored checkpoints (committed, in flight or pending; a dropped one leaves)
        self.steps: list[int] = writer.stored_steps("checkpoints").tolist()

    def add_row(self, row: Row) -> None:
        self.rows.append(row)
        if self._oldest is None:
            self._oldest = time.monotonic()

    def due(self, count: bool = True) -> bool:
        """Whether the buffered rows must be written now: ``flush_every`` of them (when ``count``), or
        the oldest logged ``flush_secs`` ago."""
        if not self.rows:
            return False
        return (count and len(self.rows) >= self.flush_every) or time.monotonic() - self._oldest >= self.flush_secs

    def write_rows(self, wait: bool) -> None:
        """Hand every buffered row to the writer (they leave the buffer once handed over)."""
        if self.rows:
            steps, epochs, columns, bad = rows_columns(self.rows)
            self._writer.append_metrics(steps, epochs, columns, nonfinite=bad, wait=False)
            self.rows, self._oldest = [], None
        if wait:
            self._writer.wait()

    def append_checkpoint(self, step: int, epoch: float, values: dict, arrays: dict, params: dict,
                          events: list) -> None:
        """Hand a checkpoint to the writer with the buffered rows up to its step, in one commit."""
        n = bisect.bisect_right([r[0] for r in self.rows], step)
        metrics = None
        if n:
            m_steps, m_epochs, m_cols, m_bad = rows_columns(self.rows[:n])
            metrics, events = (m_steps, m_epochs, m_cols), events + m_bad
        self._writer.append_checkpoint(step, epoch, values, arrays, params, metrics=metrics, nonfinite=events,
                                       wait=False)
        self.rows = self.rows[n:]
        if not self.rows:      # else the age of the oldest row handed over bounds the rest's (conservative)
            self._oldest = None

    def add_pending(self, pending: PendingCheckpoint) -> None:
        """Queue a stored checkpoint behind the pending ones (the caller made room: :meth:`hand_over`)."""
        if len(self.pending) >= MAX_PENDING:
            raise RuntimeError(f"{MAX_PENDING} checkpoints already wait for their kernels")
        self.pending.append(pending)

    def ahead(self) -> tuple[dict, dict] | None:
        """(checkpoint arrays, parameter arrays) that the pending checkpoints will write before a new one:
        for each variable, the first pending checkpoint's (it fixes a layout the store does not hold yet;
        :meth:`RunWriter.check_checkpoint`)."""
        if not self.pending:
            return None
        arrays, params = {}, {}
        for pending in self.pending:
            for name, value in pending.with_kernel(pending.kernel_like).items():
                arrays.setdefault(name, value)
            for name, value in pending.params.items():
                params.setdefault(name, value)
        return arrays, params

    def hand_over(self, keep: int | None = None) -> None:
        """Hand the pending checkpoints to the writer, in step order (see the module docstring): without
        blocking, each one at the head whose kernel is done while the writer is free; waiting for the
        head while more than ``keep`` wait (``keep=0``: all of them) or while it has waited
        ``flush_secs`` (``keep=None``: MAX_PENDING, never blocking for their number). A done kernel that
        failed drops its checkpoint — also behind a head that waits only for the writer — and raises
        its error (a note names the step)."""
        keep = MAX_PENDING if keep is None else keep
        failed = next((p for p in self.pending if p.failed()), None)
        if failed is not None:
            self._drop(failed, failed.kernel.exception())
        while self.pending:
            head = self.pending[0]
            if not (len(self.pending) > keep or time.monotonic() - head.since >= self.flush_secs
                    or (head.kernel.done() and self._writer.idle)):
                return
            try:
                result = head.kernel.result()   # (interrupted while waiting: the checkpoint still waits)
            except Exception as err:
                self._drop(head, err)
            self._writer.wait()      # a failed earlier write raises here, and the checkpoint stays pending
            self.pending.pop(0)
            try:
                kernel = ("probe", "probe_"), to_numpy(result, "the NTK")
                events = head.events + self._nonfinite.arrays("checkpoints", head.step, {"ntk": kernel})
                self.append_checkpoint(head.step, head.epoch, head.values, head.with_kernel(kernel[1]),
                                       head.params, events)
            except Exception as err:
                self._dropped(head, err)
                raise

    def _drop(self, pending: PendingCheckpoint, err: BaseException) -> None:
        """Take ``pending`` out of the queue as dropped (its kernel failed) and raise ``err``."""
        self.pending.remove(pending)
        self._dropped(pending, err)
        raise err

    def _dropped(self, pending: PendingCheckpoint, err: BaseException) -> None:
        self.steps.remove(pending.step)
        self.failures.append(f"{type(err).__name__}: {err} (the checkpoint at step {pending.step} was not stored)")
        err.add_note(f"(the checkpoint at step {pending.step}, whose NTK was computed in the background, was "
                     f"not stored; its metrics rows are kept, and the store will be closed as failed)")

    def close(self, status: str, error: str | None) -> None:
        """Hand everything over, then close the writer with ``status`` and ``error`` — "failed" (with
        the errors) instead of "complete" when a checkpoint was dropped. Rows that cannot be written
        (a second try included) close the store "failed" and raise StoreError; of the kernels that
        failed here, the first one's error is raised after the store is closed (all are in its error)."""
        kernel_error = None
        for attempt in (1, 2):    # the first try may only report a write that failed in the background
            try:
                while True:             # each failed kernel drops its checkpoint (in failures) and raises
                    try:
                        self.hand_over(keep=0)
                        break
                    except StoreError:
                        raise
                    except Exception as err:
                        kernel_error = kernel_error or err
                self.write_rows(wait=True)
                break
            except BaseException as err:
                if attempt == 2 or not isinstance(err, StoreError):
                    dropped = f"; {len(self.rows)} buffered metrics rows were not written" if self.rows else ""
                    try:
                        self._writer.close("failed", f"{type(err).__name__}: {err}{dropped}")
                    except StoreError:
                        pass            # the disk may still be full: the write error above says why
                    raise
        if self.failures:
            failure = "; ".join(self.failures)
            status = "failed" if status == "complete" else status
            error = f"{error}; also: {failure}" if error else failure
        self._writer.close(status, error)
        if kernel_error is not None:
            raise kernel_error
