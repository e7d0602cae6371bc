"""What a Recorder holds before the writer has it: buffered metrics rows, and a stored checkpoint whose
NTK is still being computed in the background.

:class:`Outbox` is that holding area and its rules:

- Rows (:meth:`Outbox.add_row`) are handed to the writer (:meth:`RunWriter.append_metrics`, one
  commit) every ``flush_every`` rows, once the oldest buffered row has waited ``flush_secs`` seconds
  (:meth:`Outbox.due`, checked at each ``log``/``checkpoint`` call), and on demand.
- A checkpoint is handed over with the rows up to its step that are still buffered, in one commit
  (:meth:`Outbox.append_checkpoint`).
- With ``ntk_background=True`` a stored checkpoint waits as a :class:`PendingCheckpoint` (its
  parameters, representations, scalars, non-finite events and the Future of its kernel,
  :mod:`dynamics.ntk.background`) until its kernel is done (:meth:`Outbox.hand_over`). At most one
  waits: the next stored checkpoint waits for it first, so a kernel's error is raised by that call at
  the latest. It does not hold the rows back: they are written on the rules above meanwhile (the
  checkpoint's own commit then holds only the rows still buffered), and a checkpoint that has waited
  ``flush_secs`` is waited for by the next call.

A kernel that fails drops its checkpoint: the error is raised with a note naming the step and kept in
:attr:`Outbox.failures`, so the Recorder closes the store "failed".
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


@dataclass
class PendingCheckpoint:
    """One stored checkpoint waiting for its kernel: the writer's arguments but the NTK and the rows,
    and the checkpoint's own non-finite events."""
    step: int
    epoch: float
    values: dict[str, float]
    arrays: dict
    params: dict
    events: list
    kernel: Future
    #: time.monotonic() when the checkpoint was stored
    since: float = field(default_factory=time.monotonic)

    def with_kernel(self, kernel: np.ndarray) -> dict:
        """The checkpoint's arrays with the NTK first, in the order of a checkpoint computed at once."""
        return {"ntk": (("probe", "probe_"), kernel), **self.arrays}


class Outbox:
    """The rows and the pending checkpoint of one Recorder (module docstring)."""

    def __init__(self, writer: RunWriter, nonfinite: NonfiniteValues, flush_every: int, flush_secs: float) -> None:
        self._writer, self._nonfinite = writer, nonfinite
        self.flush_every, self.flush_secs = flush_every, flush_secs
        self.rows: list[Row] = []
        self._oldest: float | None = None   # time.monotonic() when the oldest buffered row was logged
        self.pending: PendingCheckpoint | None = None
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

    def hand_over(self, block: bool) -> None:
        """Hand the pending checkpoint to the writer once its kernel is done and the writer free —
        waiting for them when ``block``, or when it has waited ``flush_secs``. A kernel that failed
        drops the checkpoint (see the module docstring) and raises its error."""
        pending = self.pending
        if pending is None or not (block or time.monotonic() - pending.since >= self.flush_secs
                                   or (pending.kernel.done() and self._writer.idle)):
            return
        self._writer.wait()          # a failed earlier write raises here, and the checkpoint stays pending
        try:
            result = pending.kernel.result()
        except Exception as err:     # (interrupted while waiting: the checkpoint still waits)
            result = err
        self.pending = None
        try:
            if isinstance(result, Exception):
                raise result
            kernel = ("probe", "probe_"), to_numpy(result, "the NTK")
            events = pending.events + self._nonfinite.arrays("checkpoints", pending.step, {"ntk": kernel})
            self.append_checkpoint(pending.step, pending.epoch, pending.values, pending.with_kernel(kernel[1]),
                                   pending.params, events)
        except Exception as err:
            self.steps.remove(pending.step)
            self.failures.append(f"{type(err).__name__}: {err} (the checkpoint at step {pending.step} was not stored)")
            err.add_note(f"(the checkpoint at step {pending.step}, whose NTK was computed in the background, was "
                         f"not stored; its metrics rows are kept, and the store will be closed as failed)")
            raise

    def close(self, status: str, error: str | None) -> None:
        """Hand everything over, then close the writer with ``status`` and ``error`` — "failed" (with
        the errors) instead of "complete" when a checkpoint was dropped. Rows that cannot be written
        (a second try included) close the store "failed" and raise StoreError; a kernel that failed
        here is raised after the store is closed."""
        kernel_error = None
        for attempt in (1, 2):    # the first try may only report a write that failed in the background
            try:
                try:
                    self.hand_over(block=True)
                except StoreError:
                    raise
                except Exception as err:    # the background NTK failed (in failures)
                    kernel_error = err
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
