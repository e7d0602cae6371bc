"""TensorBoard and W&B mirrors for ``Recorder(..., mirror=[...])`` and the callbacks' ``loggers=``.

A mirror receives ``log_scalars(step, {"metrics/loss": ..., "checkpoints/test_acc": ...})`` (protocol
and tags in :mod:`dynamics.mirrors`); the zarr store stays the source of truth. ::

    from dynamics.integrations.mirrors import TensorBoardMirror, WandbMirror
    with Recorder("runs/mine.zarr", model, probe=(x, y), mirror=[TensorBoardMirror("tb/mine")]) as rec:
        ...                                    # tensorboard --logdir tb  shows run "mine"

Cost: one ``SummaryWriter.add_scalar`` / ``wandb.Run.log`` call per logged row (buffered by the
library; no extra computation). TensorBoard keeps scalars as float32 (its ``simple_value``).
"""

from __future__ import annotations

import os
from typing import Any

from dynamics.integrations._require import require


class TensorBoardMirror:
    """Scalars into TensorBoard event files through ``torch.utils.tensorboard.SummaryWriter``.

    Args:
        logdir: folder of the event files (a run in ``tensorboard --logdir PARENT``); the mirror
            owns the writer it creates and closes it with the Recorder.
        writer: an existing ``SummaryWriter`` to write into instead (flushed, not closed, at close).
        purge_step: passed to a new writer: events at steps ≥ it already in ``logdir`` are hidden by
            TensorBoard (use the step a resumed run restarts from).
        flush_secs: how often the new writer flushes to disk (seconds).

    Exactly one of ``logdir`` and ``writer``; ValueError otherwise. ImportError (naming the
    ``tensorboard`` extra) when tensorboard is not installed.
    """

    def __init__(self, logdir: str | os.PathLike | None = None, *, writer: Any = None, purge_step: int | None = None,
                 flush_secs: int = 10) -> None:
        if (logdir is None) == (writer is None):
            raise ValueError("TensorBoardMirror needs exactly one of logdir and writer")
        if writer is None:
            require("tensorboard", "tensorboard", "TensorBoardMirror")
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=os.fspath(logdir), purge_step=purge_step, flush_secs=flush_secs)
            self._owned = True
        else:
            if not callable(getattr(writer, "add_scalar", None)):
                raise TypeError(f"writer must be a SummaryWriter (with add_scalar), got {type(writer).__name__}")
            self._owned = False
        self.writer = writer

    @property
    def logdir(self) -> str:
        return self.writer.get_logdir()

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, global_step=step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        """Close the writer this mirror created (flush one it was given)."""
        if self._owned:
            self.writer.close()
        else:
            self.writer.flush()

    def __repr__(self) -> str:
        return f"TensorBoardMirror({self.logdir!r})"


class WandbMirror:
    """Scalars into a Weights & Biases run (``run.log(scalars, step=step)``).

    Args:
        run: an active ``wandb`` run to log into (left open at close); None: the mirror starts one
            with ``wandb.init(**init_options)`` and finishes it at close. Offline runs (``mode="offline"``
            or ``WANDB_MODE=offline``) write ``.wandb`` files that ``wandb sync`` uploads later.

    W&B keeps one step axis per run and ignores a step lower than one already logged: after a
    resume that truncated the store, the re-logged steps appear only in the store (and in
    ``dynamics export tensorboard``), not again in W&B.
    """

    def __init__(self, run: Any = None, **init_options: Any) -> None:
        if run is not None and init_options:
            raise ValueError(f"give either run or wandb.init options, not both (got {sorted(init_options)})")
        if run is None:
            wandb = require("wandb", "wandb", "WandbMirror")
            run = wandb.init(**init_options)
            self._owned = True
        else:
            if not callable(getattr(run, "log", None)):
                raise TypeError(f"run must be a wandb run (with log), got {type(run).__name__}")
            self._owned = False
        self.run = run

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def close(self) -> None:
        """Finish the run this mirror started (a run it was given stays open)."""
        if self._owned:
            self.run.finish()

    def __repr__(self) -> str:
        return f"WandbMirror({getattr(self.run, 'name', None)!r})"
