"""What both framework callbacks do with their :class:`dynamics.Recorder`, in one place.

- Rows: one per optimiser step. With next-batch values asked for, the row of step t waits (its
  ``next_loss``/``next_loss_after`` are measured on the batch of step t + 1) together with a copy of
  the parameters θ_{t−1} it needs; the last row of a fit is logged without them.
- Checkpoints: at the steps of the schedule, with the scalars of ``evaluate(module)``.
- Resume: :meth:`StepRows.state` is what a framework checkpoint carries (plain numbers, strings,
  dicts and CPU tensors: ``torch.load(weights_only=True)`` reads it); :meth:`StepRows.resume` drops
  what the store holds past the restored step (a run that went on after that checkpoint), refuses a
  store that lacks rows the state says were written, and takes back the waiting row.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from dynamics.schedules import log_spaced

DEFAULT_CHECKPOINTS = 20
#: Recorder options the callbacks pass through (``resume`` follows the framework's checkpoint).
RECORDER_OPTIONS = ("config", "ntk", "ntk_chunk_size", "flush_every", "flush_secs", "params", "probe_index",
                    "ntk_background", "task")


def check_recorder_options(options: dict) -> dict:
    """``options`` if every key is a Recorder option the callbacks pass on; TypeError naming the others."""
    unknown = sorted(set(options) - set(RECORDER_OPTIONS))
    if unknown:
        raise TypeError(f"unknown DynamicsCallback options {unknown}; Recorder options it passes on: "
                        f"{list(RECORDER_OPTIONS)} (resume follows the framework's checkpoint; mirrors go in loggers=)")
    return options


def default_schedule(total_steps: float):
    """20 log-spaced checkpoints over steps 0 … ``total_steps``; ValueError when the total is unknown."""
    if not math.isfinite(total_steps) or total_steps < 1:
        raise ValueError(f"the number of training steps is unknown ({total_steps}): give DynamicsCallback(schedule=...)")
    return log_spaced(int(total_steps) + 1, DEFAULT_CHECKPOINTS)


def flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def optional_callable(name: str, value: object) -> Callable | None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")
    return value


def as_float(value: Any) -> float:
    """A loss as a float: a scalar tensor or number, or the "loss" of a mapping; NaN for None."""
    if isinstance(value, dict) or (hasattr(value, "keys") and hasattr(value, "__getitem__")):
        value = value.get("loss") if hasattr(value, "get") else None
    if value is None:
        return math.nan
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"a loss must be a scalar, got a tensor of shape {tuple(value.shape)}")
        return float(value.detach())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"a loss must be a scalar tensor, a number or a mapping with 'loss', got {type(value).__name__}")


class StepRows:
    """The rows and checkpoints of one fit (see the module docstring)."""

    def __init__(self, recorder: Any, schedule: Callable[[int], bool], *, next_batch: bool,
                 evaluate: Callable | None) -> None:
        self.recorder, self.schedule, self.next_batch, self.evaluate = recorder, schedule, next_batch, evaluate
        self.step = -1                          # the last step recorded (an update, or the first checkpoint)
        self.logged: int | None = None          # step of the last row handed to the Recorder
        self.pending: dict | None = None        # {"step", "epoch", "values"} waiting for next-batch values
        self.previous: list[torch.Tensor] | None = None   # θ_{t−1} of the waiting row

    def add(self, step: int, epoch: float | None, values: dict[str, float]) -> None:
        """The row of update ``step``: logged now, or held for its next-batch values."""
        self.step = step
        row = {"step": step, "epoch": epoch, "values": dict(values)}
        if self.next_batch:
            self.pending = row
        else:
            self.log(row)

    def complete(self, next_loss: float, next_loss_after: float) -> None:
        """Log the waiting row with the next batch's loss before and after its update."""
        row, self.pending = self.pending, None
        row["values"].update(next_loss=next_loss, next_loss_after=next_loss_after)
        self.log(row)

    def log(self, row: dict) -> None:
        values = {k: v for k, v in row["values"].items() if not math.isnan(v)}
        self.recorder.log(row["step"], epoch=row["epoch"], **values)
        self.logged = row["step"]

    def checkpoint(self, step: int, epoch: float | None, module: torch.nn.Module) -> None:
        """A checkpoint at ``step`` when the schedule says so, with ``evaluate(module)``'s scalars."""
        self.step = max(self.step, step)
        if not self.schedule(step):
            return
        scalars = {}
        if self.evaluate is not None:
            with torch.no_grad():
                scalars = dict(self.evaluate(module))
        self.recorder.checkpoint(step, epoch=epoch, **scalars)

    def finish(self) -> None:
        """Log the waiting row without next-batch values (the fit ended)."""
        if self.pending is not None:
            row, self.pending = self.pending, None
            self.log(row)

    def state(self) -> dict:
        pending = None if self.pending is None else {**self.pending, "values": dict(self.pending["values"])}
        return {"step": self.step, "logged": self.logged, "pending": pending,
                "previous": [t.detach().cpu() for t in self.previous] if pending is not None and self.previous else []}

    def resume(self, state: dict, step: int, path: object) -> None:
        """Continue from ``state`` (of :meth:`state`) at the restored ``step``."""
        if int(state["step"]) != step:
            raise ValueError(f"the framework checkpoint restored step {step} but the callback's state is at step "
                             f"{state['step']}")
        rec = self.recorder
        rec.truncate(step)
        last, logged = rec.last_step, state.get("logged")
        if last is not None and logged is not None and last < logged:
            raise ValueError(f"{path} holds metrics up to step {last}, but the checkpoint at step {step} was made "
                             f"after step {logged} was written: the store is not this run's")
        pending = state.get("pending")
        if pending is not None and last is not None and last >= pending["step"]:
            pending = None   # the run went on after this checkpoint and wrote that row: it stays
        self.step, self.logged = step, logged
        self.pending = None if pending is None else {**pending, "values": dict(pending["values"])}
        self.previous = [t.clone() for t in state["previous"]] if pending is not None else None


def close_quietly(recorder: Any, status: str, error: str | None, path: object) -> None:
    """Close ``recorder`` after a failure; an error of the close itself becomes a warning (the
    original exception is the one to see)."""
    if recorder is None or recorder.closed:
        return
    try:
        recorder.close(status, error)
    except Exception as failure:
        warnings.warn(f"closing {path} after a failure failed: {failure}", RuntimeWarning, stacklevel=2)
