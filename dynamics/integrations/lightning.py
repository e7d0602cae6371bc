"""PyTorch Lightning: a ``Callback`` that records a ``Trainer.fit`` into a run store.

::

    from dynamics.integrations.lightning import DynamicsCallback
    callback = DynamicsCallback("runs/lit.zarr", probe=(x_probe, y_probe), held_out=(x_val, y_val))
    trainer = L.Trainer(max_epochs=5, callbacks=[callback])
    trainer.fit(module, loader)                        # runs/lit.zarr: metrics, NTK, representations

Step t is Lightning's ``global_step`` after the t-th optimiser step; checkpoint 0 is the model
before the first update. Per step the metrics group gets (names of DESIGN §4, read by the analysis):

- ``loss``: the loss ``training_step`` returned (before the update; free; for a LightningGN step, the
  loss its report gives);
- ``loss_after`` (``loss_after=True``): the same batch after the update — one extra forward pass
  without gradient, about a third of a step's compute for a model whose backward costs two forwards;
- ``other_loss``/``other_loss_after`` (``held_out=batch``): a fixed held-out batch before/after
  (one forward per step: the "before" is the previous step's "after");
- ``next_loss``/``next_loss_after`` (``next_batch=True``): the next training batch at the parameters
  before and after this update (two forwards per step and one copy of the parameters, kept in memory
  and in Lightning's checkpoint; the row of step t is logged when step t + 1 starts; the last step of
  a fit has none);
- ``lr`` (first parameter group), ``grad_norm`` (‖∇L‖ after backward, before the step; first-order
  only), ``gn_residual`` (ρ of a :class:`~dynamics.integrations.lightning_gn.LightningGN` step).

Losses of extra forwards come from ``loss_fn(module, batch)`` (a scalar tensor), by default from the
module's own ``training_step(batch, batch_idx)`` with ``self.log`` silenced (automatic optimisation
only: under manual optimisation ``training_step`` steps the optimiser, so ``loss_fn`` is required).
They run in the module's current train/eval mode, without gradient, with torch's random state set to
the one the step started from (dropout draws the masks of the step's own forward when that forward is
the step's first draw) or, for held-out and next batches, to a fixed seed; normalisation statistics
and random streams are left as they were (:mod:`dynamics.integrations.side_effects`). In a multi-process job
(DDP) every rank measures its own batch and the values are averaged over ranks (the loss of the
global batch, for equal batch sizes); only rank 0 writes the store.

Checkpoints (:class:`dynamics.Recorder`): parameters, traced NTK on the probe inputs and
representations of ``layers`` of ``module`` (default: the LightningModule, whose ``forward`` must map
probe inputs to outputs), at the steps of ``schedule`` (default: 20 log-spaced steps over
``trainer.estimated_stepping_batches``), with the scalars ``evaluate(module)`` returns (e.g.
``{"test_acc": ...}``; called on every rank, under ``torch.no_grad()``).

Resume: Lightning's own checkpoint carries the callback's state. ``trainer.fit(..., ckpt_path=...)``
reopens the store, drops what it holds past the restored ``global_step`` (a run that went on after
that checkpoint) and continues, so the store equals an uninterrupted run's. Each Lightning checkpoint
first flushes the store. ``accumulate_grad_batches`` > 1 is refused (the loss before/after an update
is defined on the one batch it was computed from).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from dynamics.integrations._require import require
from dynamics.integrations.lightning_gn import LightningGN
from dynamics.integrations.rows import (StepRows, as_float, check_recorder_options, close_quietly, default_schedule,
                                        flag, optional_callable)
from dynamics.integrations.side_effects import devices_of, parameter_copy, parameters_set_to, random_state, untouched

L = require("lightning.pytorch", "lightning", "dynamics.integrations.lightning")

__all__ = ["DynamicsCallback", "LightningGN", "LoggerMirror"]

HELD_OUT_SEED = 0   # random state of the held-out and next-batch forwards (fixed dropout masks)


class LoggerMirror:
    """A Lightning logger (``TensorBoardLogger``, ``WandbLogger``, ``CSVLogger``...) as a mirror:
    ``log_scalars(step, scalars)`` → ``logger.log_metrics(scalars, step)``."""

    def __init__(self, logger: Any) -> None:
        if not callable(getattr(logger, "log_metrics", None)):
            raise TypeError(f"{type(logger).__name__} is neither a mirror (log_scalars) nor a Lightning logger "
                            f"(log_metrics)")
        self.logger = logger

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self.logger.log_metrics(dict(scalars), step=step)

    def close(self) -> None:
        self.logger.save()

    def __repr__(self) -> str:
        return f"LoggerMirror({type(self.logger).__name__})"


class _Silenced:
    """``module.log``/``log_dict`` as no-ops inside the block (a second ``training_step`` logs nothing)."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def __enter__(self) -> None:
        noop = lambda *args, **kwargs: None   # noqa: E731
        object.__setattr__(self.module, "log", noop)
        object.__setattr__(self.module, "log_dict", noop)

    def __exit__(self, *exc: Any) -> None:
        for name in ("log", "log_dict"):
            self.module.__dict__.pop(name, None)


class DynamicsCallback(L.Callback):
    """Record a Lightning ``fit`` into the run store at ``path`` (see the module docstring).

    Args:
        path: the store (``*.zarr``); must not exist unless ``fit`` resumes from a Lightning
            checkpoint made with this callback.
        probe: (x, y) fixed probe inputs and labels for the NTK and representations (as ``Recorder``).
        schedule: step → bool for checkpoints (``dynamics.schedules``); None: 20 log-spaced steps.
        layers: layer names of ``module`` whose outputs are stored (None: the Recorder's default).
        module: dotted name of the submodule to record (None: the LightningModule itself).
        loss_after, next_batch: record ``loss_after`` / ``next_loss(_after)`` (costs above).
        held_out: a batch (as the train loader yields it) for ``other_loss(_after)``; None: none.
        loss_fn: ``loss_fn(module, batch) -> scalar tensor`` for the extra forwards (default above).
        evaluate: ``evaluate(module) -> {name: float}`` stored with each checkpoint.
        gn_residual: log ρ of LightningGN steps as ``gn_residual``.
        loggers: mirrors (:mod:`dynamics.mirrors`) or Lightning loggers that also get the store's
            scalars, or "trainer" for every logger of the Trainer.
        **recorder_options: passed to :class:`dynamics.Recorder` (config, ntk, params, flush_secs,
            task, ...). Lightning does not say what ``training_step`` optimises: state
            ``task="classification"`` or ``"regression"`` where the probe targets are ambiguous
            (:mod:`dynamics.task`: 0/1 targets of one logit, class labels stored as floats), which
            the Recorder refuses at the start of ``fit`` otherwise.

    TypeError/ValueError for bad arguments here; ValueError at the start of ``fit`` for a setting it
    cannot record (gradient accumulation, manual optimisation without ``loss_fn`` when extra losses
    are asked for, no finite number of steps without a ``schedule``).
    """

    def __init__(self, path: str | os.PathLike, probe: tuple[Any, Any], *, schedule: Callable[[int], bool] | None = None,
                 layers: str | Iterable[str] | None = None, module: str | None = None, loss_after: bool = True,
                 next_batch: bool = False, held_out: Any = None, loss_fn: Callable | None = None,
                 evaluate: Callable | None = None, gn_residual: bool = True,
                 loggers: Sequence[Any] | str = (), **recorder_options: Any) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a path, got {type(path).__name__}")
        if not isinstance(probe, (tuple, list)) or len(probe) != 2:
            raise TypeError(f"probe must be a pair (x, y), got {type(probe).__name__}")
        if module is not None and not isinstance(module, str):
            raise TypeError(f"module must be a submodule name or None, got {type(module).__name__}")
        if isinstance(loggers, str) and loggers != "trainer":
            raise ValueError(f"loggers must be a list of mirrors/loggers or 'trainer', got {loggers!r}")
        if not isinstance(loggers, str):
            loggers = [item if callable(getattr(item, "log_scalars", None)) else LoggerMirror(item) for item in loggers]
        self.path, self.probe, self.layers, self.module_name = Path(path), tuple(probe), layers, module
        self.schedule = optional_callable("schedule", schedule)
        self.loss_after, self.next_batch = flag("loss_after", loss_after), flag("next_batch", next_batch)
        self.gn_residual = flag("gn_residual", gn_residual)
        self.held_out, self.loss_fn = held_out, optional_callable("loss_fn", loss_fn)
        self.evaluate = optional_callable("evaluate", evaluate)
        self.loggers = loggers if isinstance(loggers, str) else list(loggers)
        self.recorder_options = check_recorder_options(recorder_options)
        self.recorder = None
        self.rows: StepRows | None = None
        self._restored: dict | None = None
        self._other = math.nan            # held-out loss at the current parameters
        self._start_state: dict | None = None
        self._devices: list[int] = []     # CUDA devices of the module (their random streams are forked too)
        self._grad_norm = math.nan
        self._gn_steps = 0
        self._parameters: list[torch.nn.Parameter] = []   # the module's, listed once per fit (grad_norm)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(path=str(self.path))

    # ------------------------------------------------------------------ set-up
    def _module(self, pl_module: Any) -> torch.nn.Module:
        return pl_module if self.module_name is None else pl_module.get_submodule(self.module_name)

    def _mirrors(self, trainer: Any) -> list:
        if self.loggers == "trainer":
            return [LoggerMirror(logger) for logger in trainer.loggers]
        return list(self.loggers)

    def _check_fit(self, trainer: Any, pl_module: Any) -> None:
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(f"DynamicsCallback records one batch per update; accumulate_grad_batches="
                             f"{trainer.accumulate_grad_batches} is not supported")
        extra = self.loss_after or self.next_batch or self.held_out is not None
        if extra and self.loss_fn is None and not pl_module.automatic_optimization:
            raise ValueError("under manual optimisation training_step steps the optimiser, so DynamicsCallback "
                             "cannot re-run it for loss_after/next_batch/held_out: give loss_fn=(module, batch) "
                             "-> loss, or turn those off")

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        from dynamics import Recorder

        self._check_fit(trainer, pl_module)
        self._devices = devices_of(pl_module)
        self._parameters = list(pl_module.parameters())
        schedule = self.schedule if self.schedule is not None else default_schedule(trainer.estimated_stepping_batches)
        restored, step = self._restored, trainer.global_step
        self.recorder = Recorder(self.path, self._module(pl_module), self.probe, layers=self.layers,
                                 schedule=schedule, resume=restored is not None, mirror=self._mirrors(trainer),
                                 **self.recorder_options)
        self.rows = StepRows(self.recorder, schedule, next_batch=self.next_batch, evaluate=self.evaluate)
        if restored is not None:
            self.rows.resume(restored, step, self.path)
        if self.held_out is not None and trainer.is_global_zero:
            self._other = self._loss(pl_module, self.held_out, seed=HELD_OUT_SEED)
        if restored is None:
            self.rows.checkpoint(step, None, pl_module)

    # ------------------------------------------------------------------ per step
    def _loss(self, pl_module: Any, batch: Any, *, state: dict | None = None, seed: int | None = None,
              batch_idx: int = 0) -> float:
        with untouched(pl_module, self._devices, state=state, seed=seed):
            if self.loss_fn is not None:
                return as_float(self.loss_fn(pl_module, batch))
            with _Silenced(pl_module):
                return as_float(pl_module.training_step(batch, batch_idx))

    def _mean(self, trainer: Any, value: float) -> float:
        """``value`` averaged over the ranks of a multi-process job (every rank must call this)."""
        if trainer.world_size <= 1:
            return value
        tensor = torch.tensor(value, dtype=torch.float64, device=trainer.strategy.root_device)
        return float(trainer.strategy.reduce(tensor, reduce_op="mean"))

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        rows = self.rows
        if rows is None:
            return
        if rows.pending is not None:   # the batch this update trains on is the previous row's next batch
            with parameters_set_to(pl_module, rows.previous):
                before = self._loss(pl_module, batch, seed=HELD_OUT_SEED, batch_idx=batch_idx)
            after = self._loss(pl_module, batch, seed=HELD_OUT_SEED, batch_idx=batch_idx)
            rows.complete(self._mean(trainer, before), self._mean(trainer, after))
        if self.next_batch:
            rows.previous = parameter_copy(pl_module)
        self._start_state = random_state(self._devices) if self.loss_after else None
        self._grad_norm = math.nan

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        grads = [p.grad for p in self._parameters if p.grad is not None]
        if grads:   # one fused (foreach) norm over every gradient
            self._grad_norm = float(torch.nn.utils.get_total_norm(grads, foreach=True))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        rows = self.rows
        if rows is None or trainer.global_step == rows.step:
            return   # no update was made (a skipped step)
        step = trainer.global_step
        values = {"loss": self._mean(trainer, as_float(outputs))}
        if self.loss_after:
            values["loss_after"] = self._mean(trainer, self._loss(pl_module, batch, state=self._start_state,
                                                                  batch_idx=batch_idx))
        if self.held_out is not None and trainer.is_global_zero:   # the same batch on every rank
            after = self._loss(pl_module, self.held_out, seed=HELD_OUT_SEED)
            values.update(other_loss=self._other, other_loss_after=after)
            self._other = after
        self._optimizer_values(trainer, values)
        batches = trainer.num_training_batches
        epoch = trainer.current_epoch + (batch_idx + 1) / batches if math.isfinite(batches) and batches else None
        rows.add(step, epoch, values)
        rows.checkpoint(step, epoch, pl_module)

    def _optimizer_values(self, trainer: Any, values: dict) -> None:
        optimizers = trainer.optimizers
        if not optimizers:
            return
        optimizer = optimizers[0]
        values["lr"] = float(optimizer.param_groups[0]["lr"])
        if isinstance(optimizer, LightningGN):
            if optimizer.last_report is not None and optimizer.steps != self._gn_steps:
                values["loss"] = float(optimizer.last_report.loss)   # the loss the GN step was computed from
                if self.gn_residual:
                    values["gn_residual"] = float(optimizer.last_report.residual)
            self._gn_steps = optimizer.steps
        elif math.isfinite(self._grad_norm):
            values["grad_norm"] = self._grad_norm

    # ------------------------------------------------------------------ Lightning checkpoints
    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        if self.recorder is not None and not self.recorder.closed:
            self.recorder.flush()   # the store holds every row the checkpoint's state assumes

    def state_dict(self) -> dict:
        return {"path": str(self.path), **(self.rows.state() if self.rows is not None else {"step": -1})}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = dict(state_dict)

    # ------------------------------------------------------------------ closing
    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.recorder is None or self.recorder.closed:
            return
        self.rows.finish()   # the last step has no next batch
        self.recorder.close("interrupted" if trainer.interrupted else "complete")

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        interrupted = isinstance(exception, KeyboardInterrupt)
        close_quietly(self.recorder, "interrupted" if interrupted else "failed",
                      None if interrupted else f"{type(exception).__name__}: {exception}", self.path)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.recorder is not None and not self.recorder.closed:
            self.recorder.close("interrupted")
