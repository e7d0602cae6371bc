"""Hugging Face ``transformers.Trainer``: a ``TrainerCallback`` that records ``trainer.train()`` into a run store.

::

    from dynamics.integrations.huggingface import DynamicsCallback
    probe = ({"input_ids": ids[:32], "attention_mask": mask[:32]}, labels[:32])   # what the model takes
    with DynamicsCallback("runs/hf.zarr", probe=probe) as callback:
        Trainer(model, args, train_dataset=data, callbacks=[callback]).train()

Step t is ``state.global_step`` after the t-th optimiser step; checkpoint 0 is the model before the
first update. The callback sees the batches through hooks on the model's ``forward`` (the keyword
arguments the Trainer passes: ``input_ids``, ``attention_mask``, ``labels``, ``num_items_in_batch``...),
in training mode with gradients enabled only. Per step the metrics group gets:

- ``loss``: the loss of the step's whole batch, from what the model returned for each micro-batch of a
  gradient-accumulation step: their mean weighted by their items (labels other than -100), or their
  sum where the model normalised each by the ``num_items_in_batch`` the Trainer passed (found once,
  by one forward without it; transformers passes it to models that ignore it, and then logs the sum
  of the micro-batch means as its own ``loss``);
- ``loss_after`` (``loss_after=True``): the same batch after the update — one extra forward per
  micro-batch, without gradient, replaying the random state of the step's own forward (the same
  dropout masks);
- ``other_loss``/``other_loss_after`` (``held_out=batch``, a collated batch with ``labels``): one
  forward per step;
- ``next_loss``/``next_loss_after`` (``next_batch=True``): the next step's batch at the parameters
  before and after this update (two forwards per micro-batch and one copy of the parameters);
- ``lr``: the learning rate of the first parameter group at the optimiser step.

The extra losses are the model's own ``loss`` output, so the model must compute its loss from the
``labels`` in the batch (every ``...For...`` model of transformers does); a Trainer that computes it
elsewhere (``compute_loss_func``, label smoothing) raises ValueError at the first step unless
``loss_after=False``, ``next_batch=False`` and no ``held_out``. The extra forwards leave training as
it was (random streams and normalisation statistics: :mod:`dynamics.integrations.side_effects`).

Checkpoints (:class:`dynamics.Recorder`): parameters, the traced NTK of the model's ``logits`` on the
probe inputs (a dict of token tensors works: :mod:`dynamics.inputs`) and representations of
``layers``, at the steps of ``schedule`` (default: 20 log-spaced steps over ``state.max_steps``),
with ``evaluate(model)``'s scalars.

Resume: when the Trainer saves a checkpoint (``output_dir/checkpoint-<step>``), the callback first
writes the store's buffered rows and its own state into that folder (``dynamics_callback.pt``);
``trainer.train(resume_from_checkpoint=...)`` then reopens the store, drops what it holds past the
restored step and continues, so the store equals an uninterrupted run's. transformers has no hook
for a failed ``train()``: use the callback as a context manager (``with DynamicsCallback(...) as
callback:``), which closes the store as "failed" (or "interrupted" for Ctrl-C) when ``train()``
raises; otherwise the store stays "running" until the process ends or a later ``train()`` of the same
model starts with a new DynamicsCallback, which closes the old one (a resume works either way).
One process per run: in a multi-process job the losses are averaged over the ranks and only rank 0
writes, as in the Lightning callback (not covered by the tests of this adapter).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from dynamics.integrations._require import require
from dynamics.integrations.rows import (StepRows, as_float, check_recorder_options, close_quietly, default_schedule,
                                        flag, optional_callable)
from dynamics.integrations.side_effects import devices_of, parameter_copy, parameters_set_to, random_state, untouched

transformers = require("transformers", "huggingface", "dynamics.integrations.huggingface")

__all__ = ["DynamicsCallback"]

STATE_FILE = "dynamics_callback.pt"
HELD_OUT_SEED = 0


def _mean_over_ranks(value: float) -> float:
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor[0]) / dist.get_world_size()


def _items(micro: dict) -> int:
    """Items a micro-batch's mean loss averages over: labels other than -100, else its samples."""
    labels = micro["kwargs"].get("labels")
    if isinstance(labels, torch.Tensor):
        return max(int((labels != -100).sum()), 1)
    for value in (*micro["args"], *micro["kwargs"].values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return 1


def known_task(model: torch.nn.Module) -> str | None:
    """The task of ``model``'s own loss as transformers decides it, for :mod:`dynamics.task`: its
    ``config.problem_type`` ("regression": MSE → "regression"; "single_label_classification":
    cross-entropy → "classification"); unset, a ``...ForSequenceClassification`` model with
    ``config.num_labels == 1`` fits MSE whatever the labels' dtype (its ``forward`` sets "regression")
    → "regression". None otherwise (multi-label, token or language-model heads: the Recorder infers
    the task from the probe targets and the number of logits)."""
    config = getattr(model, "config", None)
    problem = getattr(config, "problem_type", None)
    if problem == "regression":
        return "regression"
    if problem == "single_label_classification":
        return "classification"
    if problem is None and type(model).__name__.endswith("ForSequenceClassification") \
            and getattr(config, "num_labels", None) == 1:
        return "regression"
    return None


class DynamicsCallback(transformers.TrainerCallback):
    """Record a ``transformers.Trainer`` run into the store at ``path`` (see the module docstring).

    Args:
        path: the store (``*.zarr``); must not exist unless training resumes from a checkpoint of a
            Trainer that had this callback.
        probe: (x, y): the probe inputs as the model takes them (a dict of (N, ...) tensors such as
            ``input_ids``/``attention_mask``, or a tensor) and their labels (N,).
        schedule: step → bool for checkpoints; None: 20 log-spaced steps over ``max_steps``.
        layers: layer names whose outputs are stored (None: the Recorder's default; [] none).
        loss_after, next_batch, held_out: the extra losses (costs in the module docstring).
        evaluate: ``evaluate(model) -> {name: float}`` stored with each checkpoint.
        loggers: mirrors (:mod:`dynamics.mirrors`) that also get the store's scalars.
        **recorder_options: passed to :class:`dynamics.Recorder` (config, ntk, params, flush_secs,
            task, ...). Without ``task`` (here or as the config's key ``task``), the task of the
            model's own loss is stated where transformers fixes it (:func:`known_task`: the
            ``problem_type``, or MSE for one label), else inferred from the probe targets.
    """

    def __init__(self, path: str | os.PathLike, probe: tuple[Any, Any], *, schedule: Callable[[int], bool] | None = None,
                 layers: str | Iterable[str] | None = None, loss_after: bool = True, next_batch: bool = False,
                 held_out: dict | None = None, evaluate: Callable | None = None, loggers: Sequence[Any] = (),
                 **recorder_options: Any) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a path, got {type(path).__name__}")
        if not isinstance(probe, (tuple, list)) or len(probe) != 2:
            raise TypeError(f"probe must be a pair (x, y), got {type(probe).__name__}")
        if held_out is not None and not (hasattr(held_out, "keys") and "labels" in held_out):
            raise ValueError("held_out must be a collated batch (a dict of tensors) with 'labels'")
        if isinstance(loggers, str) or not all(callable(getattr(m, "log_scalars", None)) for m in loggers):
            raise TypeError("loggers must be a list of mirrors (objects with log_scalars(step, scalars))")
        self.path, self.probe, self.layers = Path(path), tuple(probe), layers
        self.schedule = optional_callable("schedule", schedule)
        self.loss_after, self.next_batch = flag("loss_after", loss_after), flag("next_batch", next_batch)
        self.held_out, self.evaluate = held_out, optional_callable("evaluate", evaluate)
        self.loggers = list(loggers)
        self.recorder_options = check_recorder_options(recorder_options)
        self.recorder = None
        self.rows: StepRows | None = None
        self.model: torch.nn.Module | None = None
        self._hooks: list = []
        self._busy = False                 # True while the callback's own forwards run
        self._micro: list[dict] = []       # the micro-batches of the current step: inputs, random state, loss
        self._next: list[tuple[float, float]] = []   # (before, after) of the waiting row's next batch
        self._devices: list[int] = []
        self._other = math.nan
        self._lr = math.nan
        self._shares: bool | None = None   # whether micro-batch losses are shares of the step's loss

    # ------------------------------------------------------------------ set-up
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from dynamics import Recorder

        if model is None:
            raise ValueError("DynamicsCallback needs the Trainer's model (got model=None)")
        if self.recorder is not None and not self.recorder.closed:
            raise RuntimeError(f"this DynamicsCallback is already recording {self.path}; use one callback per train()")
        self._retire_stale_callbacks(model)
        self.model, self._devices = model, devices_of(model)
        schedule = self.schedule if self.schedule is not None else default_schedule(state.max_steps)
        step = state.global_step
        saved = self._saved_state(args, step) if step > 0 else None
        resume = step > 0 and self.path.exists()
        if step > 0 and resume and saved is None:
            warnings.warn(f"no {STATE_FILE} in the checkpoint of step {step}: {self.path} resumes at step {step}, "
                          f"and a row waiting for its next batch there, if any, is lost", RuntimeWarning, stacklevel=2)
        options = dict(self.recorder_options)
        config = options.get("config")
        if options.get("task") is None and not (isinstance(config, dict) and config.get("task") is not None):
            options["task"] = known_task(model)   # the loss transformers computes, where it is fixed
        self.recorder = Recorder(self.path, model, self.probe, layers=self.layers, schedule=schedule, resume=resume,
                                 mirror=self.loggers, **options)
        self.rows = StepRows(self.recorder, schedule, next_batch=self.next_batch, evaluate=self.evaluate)
        if resume:
            self.rows.resume(saved or {"step": step, "logged": None, "pending": None, "previous": []}, step, self.path)
        self._hooks = [model.register_forward_pre_hook(self._before_forward, with_kwargs=True),
                       model.register_forward_hook(self._after_forward, with_kwargs=True)]
        if self.held_out is not None:
            self._other = self._held_out_loss()
        if not resume:
            self.rows.checkpoint(step, None, model)

    def _retire_stale_callbacks(self, model: torch.nn.Module) -> None:
        """Close the DynamicsCallbacks whose hooks are still on ``model`` from a ``train()`` that raised
        without the context manager: their stores are released ("interrupted") and they stop watching
        the model's forwards, so a new train() can resume the same store in the same process."""
        for hook in list(model._forward_pre_hooks.values()):
            owner = getattr(hook, "__self__", None)
            if isinstance(owner, DynamicsCallback) and owner is not self:
                owner.close("interrupted", "a later train() started on the same model before this one was closed")

    @staticmethod
    def _checkpoint_folder(args, step: int) -> Path:
        return Path(args.output_dir) / f"{transformers.trainer_utils.PREFIX_CHECKPOINT_DIR}-{step}"

    def _saved_state(self, args, step: int) -> dict | None:
        file = self._checkpoint_folder(args, step) / STATE_FILE
        return torch.load(file, weights_only=True, map_location="cpu") if file.is_file() else None

    # ------------------------------------------------------------------ forwards
    def _capturing(self, module: torch.nn.Module) -> bool:
        return (not self._busy and module.training and torch.is_grad_enabled() and self.recorder is not None
                and not self.recorder.closed)

    def _before_forward(self, module, args, kwargs):
        if not self._capturing(module):
            return None
        rows = self.rows
        if rows.pending is not None:   # this step's batch is the waiting row's next batch
            with parameters_set_to(module, rows.previous):
                before = self._model_loss(args, kwargs, seed=HELD_OUT_SEED)
            self._next.append((before, self._model_loss(args, kwargs, seed=HELD_OUT_SEED)))
        self._micro.append({"args": args, "kwargs": kwargs, "state": random_state(self._devices), "loss": math.nan})
        return None

    def _after_forward(self, module, args, kwargs, output):
        if self._capturing(module) and self._micro:
            micro = self._micro[-1]
            micro["loss"] = self._loss_of(output)
            if self._shares is None:
                self._shares = self._loss_is_a_share(micro)

    def _loss_is_a_share(self, micro: dict) -> bool:
        """Whether the model's loss honours the ``num_items_in_batch`` the Trainer passed (it is then a
        share of the whole step's loss), found once by running the first micro-batch without it (same
        parameters, same random state): transformers passes it to every model whose forward takes
        ``**kwargs``, and some of them ignore it."""
        if "num_items_in_batch" not in micro["kwargs"] or math.isnan(micro["loss"]):
            return False
        kwargs = {k: v for k, v in micro["kwargs"].items() if k != "num_items_in_batch"}
        alone = self._model_loss(micro["args"], kwargs, state=micro["state"])
        return not math.isclose(alone, micro["loss"], rel_tol=1e-6, abs_tol=1e-12)

    def _loss_of(self, output: Any) -> float:
        loss = as_float(output) if hasattr(output, "keys") else (
            as_float(output[0]) if isinstance(output, (tuple, list)) and output else math.nan)
        return loss

    def _model_loss(self, args: tuple, kwargs: dict, *, state: dict | None = None, seed: int | None = None) -> float:
        self._busy = True
        try:
            with untouched(self.model, self._devices, state=state, seed=seed):
                loss = self._loss_of(self.model(*args, **kwargs))
        finally:
            self._busy = False
        if math.isnan(loss):
            raise ValueError("the model returned no loss for the batch (it computes none without 'labels', or the "
                             "Trainer computes it with compute_loss_func/label smoothing); DynamicsCallback needs the "
                             "model's own loss for loss_after/next_batch/held_out: turn those off to record "
                             "checkpoints only")
        return loss

    def _held_out_loss(self) -> float:
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.held_out.items()}
        return self._model_loss((), batch, seed=HELD_OUT_SEED)

    def _combine(self, micro: list[dict], values: list[float]) -> float:
        """The loss of the step's whole batch from its micro-batches' losses: their sum when each is a
        share (a loss normalised by ``num_items_in_batch``), else their mean weighted by the number of
        items in each (labels other than -100; samples without labels) — the mean over the whole batch."""
        if not values:
            return math.nan
        if self._shares:
            return float(sum(values))
        weights = [_items(m) for m in micro]
        return float(sum(w * v for w, v in zip(weights, values)) / sum(weights))

    # ------------------------------------------------------------------ per step
    def on_step_begin(self, args, state, control, **kwargs):
        self._micro = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        rows = self.rows
        if rows is None:
            return
        if rows.pending is not None and self._next:
            micro = self._micro
            rows.complete(_mean_over_ranks(self._combine(micro, [b for b, _ in self._next])),
                          _mean_over_ranks(self._combine(micro, [a for _, a in self._next])))
        self._next = []
        if self.next_batch:
            rows.previous = parameter_copy(self.model)   # θ before this update, for this step's row
        self._lr = float(optimizer.param_groups[0]["lr"]) if optimizer is not None else math.nan

    def on_step_end(self, args, state, control, **kwargs):
        rows = self.rows
        if rows is None or state.global_step == rows.step:
            return
        micro = self._micro
        values = {"loss": _mean_over_ranks(self._combine(micro, [m["loss"] for m in micro])), "lr": self._lr}
        if self.loss_after and micro:
            after = [self._model_loss(m["args"], m["kwargs"], state=m["state"]) for m in micro]
            values["loss_after"] = _mean_over_ranks(self._combine(micro, after))
        if self.held_out is not None:
            after = self._held_out_loss()
            values.update(other_loss=self._other, other_loss_after=after)
            self._other = after
        self._micro = []
        rows.add(state.global_step, state.epoch, values)
        rows.checkpoint(state.global_step, state.epoch, self.model)
        if control.should_save:
            self._before_save(args, state)

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_save and self.rows is not None:
            self._before_save(args, state)

    def _before_save(self, args, state) -> None:
        """The Trainer saves a checkpoint next: write the store's buffered rows and this callback's state
        into the checkpoint folder first, so that resuming from it continues the store exactly."""
        self.recorder.flush()
        if not args.should_save:   # another process writes the checkpoint
            return
        folder = self._checkpoint_folder(args, state.global_step)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{STATE_FILE}.{os.getpid()}.tmp"
        torch.save({"path": str(self.path), **self.rows.state()}, tmp)
        os.replace(tmp, folder / STATE_FILE)

    # ------------------------------------------------------------------ closing
    def on_train_end(self, args, state, control, **kwargs):
        if self.recorder is None or self.recorder.closed:
            return
        self.rows.finish()
        self._remove_hooks()
        self.recorder.close("complete")

    def _remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def close(self, status: str = "complete", error: str | None = None) -> None:
        """Close the store (and remove the hooks) if ``train()`` left it open."""
        self._remove_hooks()
        if self.recorder is not None and not self.recorder.closed:
            self.recorder.close(status, error)

    def __enter__(self) -> DynamicsCallback:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._remove_hooks()
        if exc_type is None:
            self.close("interrupted")   # a no-op after a finished train(); "interrupted" if it never ended
        elif issubclass(exc_type, KeyboardInterrupt):
            close_quietly(self.recorder, "interrupted", None, self.path)
        else:
            close_quietly(self.recorder, "failed", f"{exc_type.__name__}: {exc}", self.path)
        return False
