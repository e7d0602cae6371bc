"""Checkpoints whose NTK is still being computed in the background, in the order they were stored.

The Recorder (``ntk_background=True``) keeps a stored checkpoint here — its parameters,
representations, scalars, the buffered metrics rows up to its step, and the Future of its kernel
(:mod:`dynamics.ntk.background`) — until it can be handed to the writer. Checkpoints are handed over
in order, each in its own write batch with its rows (:meth:`RunWriter.append_checkpoint`), so the
store's commits stay in step order and each commit holds the rows up to its checkpoint.

:meth:`PendingCheckpoints.hand_over` hands over what is ready — a kernel that is done, while the
writer has no write in flight — without blocking, and blocks only for the checkpoints beyond ``keep``
(``keep=0``: all of them, before metrics rows are written and at close). A failed kernel, or a
checkpoint the writer refuses, drops that checkpoint: its metrics rows go to the next pending
checkpoint, or back to the Recorder (``restore``), and the error is re-raised with a note naming the
step. A write error of an earlier batch (StoreError from the writer's wait) leaves everything pending.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from dynamics.convert import to_numpy
from dynamics.store.writer import RunWriter

#: Row of the Recorder's buffer: (step, epoch, values by name, names of non-finite values).
Row = tuple[int, float, dict[str, float], list[str]]


def rows_columns(rows: list[Row]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], list]:
    """Buffered rows as (steps, epochs, name → column, nonfinite events) for the writer; a name
    missing from a row is NaN there."""
    names = list(dict.fromkeys(name for _, _, values, _ in rows for name in values))
    columns = {name: np.array([values.get(name, math.nan) for _, _, values, _ in rows]) for name in names}
    bad = [("metrics", name, step) for step, _, _, names_bad in rows for name in names_bad]
    return (np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.float64),
            columns, bad)


@dataclass
class PendingCheckpoint:
    """One stored checkpoint waiting for its kernel: the writer's arguments but the NTK, the
    checkpoint's own non-finite events, and the metrics rows (step ≤ ``step``) it commits."""
    step: int
    epoch: float
    values: dict[str, float]
    arrays: dict
    params: dict
    events: list
    rows: list[Row]
    kernel: Future
    #: an array with the shape and dtype the kernel will have (a stand-in for checks before it is done)
    kernel_like: np.ndarray

    def with_kernel(self, kernel: np.ndarray) -> dict:
        """The checkpoint's arrays with the NTK first, in the order of a checkpoint computed at once."""
        return {"ntk": (("probe", "probe_"), kernel), **self.arrays}

    def layout(self) -> tuple[dict, dict]:
        """(checkpoint arrays with the kernel's stand-in, parameter arrays): what the writer checks a
        later checkpoint against before this one is written (``RunWriter.check_checkpoint(ahead=)``)."""
        return self.with_kernel(self.kernel_like), self.params


class PendingCheckpoints:
    """The queue (see the module docstring); ``restore(checkpoint)`` takes back the rows of a dropped
    checkpoint that no later pending checkpoint can take, and forgets its step."""

    def __init__(self, writer: RunWriter, restore: Callable[[PendingCheckpoint], None]) -> None:
        self._writer, self._restore = writer, restore
        self.items: list[PendingCheckpoint] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, checkpoint: PendingCheckpoint) -> None:
        self.items.append(checkpoint)

    def first_layout(self) -> tuple[dict, dict] | None:
        """:meth:`PendingCheckpoint.layout` of the oldest pending checkpoint (None when none waits): each
        pending checkpoint was checked against it, so a new one is checked against it too."""
        return self.items[0].layout() if self.items else None

    def hand_over(self, keep: int = 0) -> None:
        """Hand over every checkpoint that is ready, and block until at most ``keep`` remain."""
        while self.items:
            head = self.items[0]
            if len(self.items) <= keep and not (head.kernel.done() and self._writer.idle):
                return
            self._writer.wait()          # a failed earlier write raises here, and everything stays
            self.items.pop(0)
            try:
                kernel = to_numpy(head.kernel.result(), "the NTK")
                metrics, events = None, list(head.events)
                if head.rows:
                    steps, epochs, columns, bad = rows_columns(head.rows)
                    metrics, events = (steps, epochs, columns), events + bad
                self._writer.append_checkpoint(head.step, head.epoch, head.values, head.with_kernel(kernel),
                                               head.params, metrics=metrics, nonfinite=events, wait=False)
            except BaseException as err:
                if self.items:
                    self.items[0].rows[:0] = head.rows
                    head.rows = []
                self._restore(head)
                err.add_note(f"(the checkpoint at step {head.step}, whose NTK was computed in the background, "
                             f"was not stored; its metrics rows are kept)")
                raise
