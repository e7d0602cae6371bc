"""The training loop: one optimiser, one seed → one run store (DESIGN §4 "Run store").

Per step t = 1 … T (the update that turns the parameters θ_{t−1} into θ_t) the metrics group gets
- ``loss``: batch loss L_B(θ_{t−1}) of the mini-batch B (from the optimiser's own forward pass);
- ``loss_after``: L_B(θ_t), the same batch after the update (one extra forward);
- ``other_loss`` / ``other_loss_after``: the fixed held-out batch (see :mod:`trainers.setup`) before
  and after; ``other_loss`` at step t *is* ``other_loss_after`` of step t − 1 (reused, not recomputed);
- ``next_loss`` / ``next_loss_after``: the *next* training mini-batch B_{t+1} (the one step t + 1 will
  be trained on; after the last step, the one a longer run would train on next) before and after
  step t: L_{B_{t+1}}(θ_{t−1}) and L_{B_{t+1}}(θ_t) — how an update transfers to other *training*
  batches, the paper's "other mini-batches";
- ``lr``; ``grad_norm`` ‖∇L_B(θ_{t−1})‖ for every optimiser (GN too); ``update_norm`` ‖θ_t − θ_{t−1}‖;
  ``gn_residual`` ρ from the GN step report (NaN for first-order); ``time``: wall seconds of the update;
  ``phase``: index of the optimiser phase of the update (0 unless ``train.phases`` makes this run a
  phased one, :mod:`trainers.phases`).
Checkpoints at step 0 and log-spaced steps up to T store train/test loss and accuracy, the
parameters, the probe-set NTK and representations (the Recorder does the last three), and, when
``train.linearized`` / ``train.sharpness`` are on, the linearised twin's distance, loss and accuracy
and the sharpness of the probe-set loss (:mod:`trainers.lazy`; the twin is stepped after every update
on the same batch, outside the update's ``time``).

Augmentation (``data.augment``): the mini-batch of update t is augmented with the boxes of (seed, t)
(:mod:`trainers.data.augment`) before the optimiser sees it; ``loss``/``loss_after`` are on that
augmented batch, ``next_loss``/``next_loss_after`` on the next batch as update t + 1 will see it
(augmented with (seed, t + 1)); the held-out batch, probe and evaluations are never augmented.

Data order: a ``torch.Generator`` seeded with the run's seed draws one permutation of the pool per
epoch. The resume state (saved at every checkpoint and on Ctrl-C) holds that generator's state at the
start of the current epoch, the position in it, the model and optimiser ``state_dict`` s and the last
other-batch loss and the optimiser phase, so a resumed run equals an uninterrupted one bit for bit (CPU).
Ctrl-C, SIGTERM and SIGHUP are deferred to the end of the current step; a second one interrupts at
once (then the state saved at the last checkpoint is the one a resume starts from); see
:mod:`trainers.signals`. A run that meets the divergence rule of :mod:`trainers.failures` fails.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import torch

from dynamics import Recorder
from dynamics.errors import ConfigError, StoreError
from dynamics.store import check_store
from dynamics.store.lock import StoreLock
from dynamics.schedules import at
from trainers import failures, signals
from trainers.budget import check_memory
from trainers.config import ExperimentConfig, validate
from trainers.lazy import LinearTwin, checkpoint_scalars, quiet_undefined
from trainers.optimizers import batch_loss, make_optimizer
from trainers.phases import PhaseSteppers, phase_plan, run_phases
from trainers.progress import Progress
from trainers.resume_state import check_resume_state, stored_parameters
from trainers.runtime import resolve_device
from trainers.schema import SEED_MAX
from trainers.data import Dataset
from trainers.setup import Experiment, build_model, prepare

EVAL_CHUNK = 4096


def store_name(optimizer: str, seed: int, n_seeds: int) -> str:
    """``gn.zarr`` for a single seed, ``gn-seed1.zarr`` when ``n_seeds`` > 1."""
    return f"{optimizer}.zarr" if n_seeds <= 1 else f"{optimizer}-seed{seed}.zarr"


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> tuple[float, float]:
    """Mean loss and accuracy (fraction of argmax = label) over (x, y), in chunks of EVAL_CHUNK rows."""
    total, correct = 0.0, 0
    for start in range(0, len(y), EVAL_CHUNK):
        logits = model(x[start:start + EVAL_CHUNK])
        labels = y[start:start + EVAL_CHUNK]
        total += float(batch_loss(logits, labels, loss)) * len(labels)
        correct += int((logits.argmax(dim=1) == labels).sum())
    return total / len(y), correct / len(y)


def parameter_vector(model: torch.nn.Module) -> torch.Tensor:
    """All parameters as one new flat tensor (``torch.cat`` copies, so later updates leave it unchanged)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def resolved_config(config: ExperimentConfig, optimizer: str, seed: int, experiment: Experiment) -> dict:
    """The config as stored in the run (a JSON-able dict): the validated config plus this run's optimiser,
    its options, seed and schedule."""
    out = config.to_dict()
    out["train"]["seed"] = seed
    out["optimizer"] = optimizer
    phases = run_phases(config.train.phases, optimizer)
    out["optimizer_options"] = config.optimizer(optimizer).model_dump(mode="json") if phases is None else {
        "phases": [{**p, "options": config.optimizer(p["optimizer"]).model_dump(mode="json")} for p in phases]}
    out["seed"] = seed
    out["schedule"] = {"total_steps": experiment.total_steps, "steps_per_epoch": experiment.steps_per_epoch,
                       "checkpoint_steps": experiment.checkpoint_steps,
                       "other_batch": "fixed held-out training batch (never trained on)"}
    return out


def remove_store(out: Path) -> None:
    """Delete the run store ``out`` (StoreError if it is not one, StoreLockedError if a writer holds it)."""
    check_store(out)
    StoreLock(out).acquire().release()
    shutil.rmtree(out)


def train(config: ExperimentConfig | Mapping, optimizer: str, out: str | Path, *, seed: int | None = None,
          resume: bool = False, overwrite: bool = False, progress: bool | str = True,
          callback: Callable[[int], None] | None = None, data: Dataset | None = None,
          label: str | None = None) -> Path:
    """Train ``config``'s model with ``optimizer`` (a name in ``config.optimizers`` or a kind) into the
    store ``out``; returns its path. ``config`` is an :class:`~trainers.config.ExperimentConfig` (a
    mapping is validated first); ``seed`` overrides ``train.seed``; ``resume`` continues an
    interrupted store (a missing store starts fresh); ``overwrite`` deletes an existing run store at
    ``out`` first (never anything that is not a run store); ``progress`` shows a bar on a terminal
    and progress lines on a redirected stderr (:mod:`trainers.progress`), False nothing, or names the
    mode ("bar", "lines": the form runs training side by side use); ``callback(step)`` runs after every step
    (tests raise KeyboardInterrupt from it); ``data`` is ``config.data``'s data set already loaded by
    :func:`trainers.setup.load_data` (``dynamics run`` loads it once for all its runs; None loads it); ``label`` names the run in its
    progress (default "<optimizer> seed <seed>"). The run computes with ``config.train.threads`` torch
    threads (the count in force before is restored when it returns). Bad config or seed, or a config that cannot fit in the
    available memory (:mod:`trainers.budget`) → ConfigError before anything is written. SIGINT,
    SIGTERM and SIGHUP stop the run between steps (:mod:`trainers.signals`): the store is marked
    "interrupted" and :class:`~trainers.signals.Stopped` (a KeyboardInterrupt) is raised. Resuming a
    complete store does nothing; a failed resume leaves the status it found (:mod:`trainers.failures`)."""
    out = Path(out)
    config = validate(config)
    seed = config.train.seed if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"seed must be an int in [0, 2**63 - 1], got {seed!r}")
    phases = run_phases(config.train.phases, optimizer)   # None: a one-optimiser run
    names = [p["optimizer"] for p in phases] if phases else [optimizer]
    options = {name: config.optimizer(name) for name in names}
    resolve_device(config.train.device)   # ConfigError when CUDA is asked for and absent, before any write
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other: resume continues a store, overwrite deletes it")
    if out.exists() and not out.is_dir():
        raise StoreError(f"'{out}' is an existing file, not a run store (a directory); choose another path")
    mode = progress if isinstance(progress, str) else "auto" if progress else "off"
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.train.threads)   # part of the run's config (trainers.runtime)
    try:
        with signals.deferred_stop() as stop:
            return _train(config, optimizer, out, seed, resume, overwrite, mode, callback, stop, phases, options,
                          data, label or f"{optimizer} seed {seed}")
    finally:
        torch.set_num_threads(previous_threads)


def _train(config: ExperimentConfig, optimizer: str, out: Path, seed: int, resume: bool, overwrite: bool,
           progress: str, callback: Callable[[int], None] | None, stop: dict, phases: list | None,
           options: dict, data: Dataset | None, label: str) -> Path:
    device = resolve_device(config.train.device)
    experiment = prepare(config, data)
    plan = phase_plan(phases or [{"optimizer": optimizer}], experiment.steps_per_epoch, experiment.total_steps)
    if phases:  # the last update of every phase is a checkpoint (parameters at the switch)
        experiment = replace(experiment, checkpoint_steps=sorted(set(experiment.checkpoint_steps)
                                                                 | {p.stop for p in plan}))
    for name in options:
        check_memory(config, name, options[name].kind, experiment.x.shape[1], experiment.n_classes)
    if overwrite and out.exists():
        remove_store(out)
    stored_config = resolved_config(config, optimizer, seed, experiment)
    model = build_model(config.model, experiment.x.shape[1], experiment.n_classes, seed).to(device)
    experiment = experiment.to(device)  # data, probe, batches on the model's device; stores get CPU copies
    loss = config.train.loss
    steppers = PhaseSteppers(plan, lambda name: make_optimizer(name, options[name], model, loss))
    stepper = steppers.at(0)
    resuming = resume and out.exists()
    if resuming and failures.already_complete(out, stored_config):
        return out   # resuming a complete store does nothing
    previous = check_store(out).get("status") if resuming else None
    recorder = Recorder(out, model, probe=(experiment.x[experiment.probe], experiment.y[experiment.probe]),
                        config=stored_config, schedule=at(experiment.checkpoint_steps),
                        ntk=config.train.ntk, params=config.train.params, resume=resuming,
                        probe_index=experiment.probe.cpu(), task="classification")
    run = RunState(experiment, model, stepper, recorder, loss, seed, stored_config)
    run.steppers = steppers
    if config.train.linearized:   # built from the model as initialised: θ₀ (a resume restores θ later)
        run.twin = LinearTwin(model, plan, options, loss, experiment.x[experiment.probe], experiment.eval_test[0])
    run.sharpness = config.train.sharpness
    restoring = resuming   # until training starts, a failure leaves the status found (failures.py)
    try:
        state = load_resume_state(recorder, run, out, previous) if resuming else None
        if state is None:  # a fresh store, or one stopped before its first resume state: start from scratch
            recorder.truncate(-1)
            run.checkpoint()
        restoring = False
        run.boundary = True
        with Progress(experiment.total_steps, initial=run.step, desc=label,
                      mode=progress,
                      header=f"{experiment.total_steps} steps on {device}, "
                             f"{torch.get_num_threads()} CPU thread(s)") as bar:
            while run.step < experiment.total_steps:
                signals.check(stop)
                run.boundary = False
                run.advance()
                run.boundary = True
                bar.update(run.step, run.last_loss)
                if callback is not None:
                    callback(run.step)
                signals.check(stop)
    except KeyboardInterrupt:
        with signals.shielded(stop):
            try:
                if run.boundary:
                    recorder.save_state(run.state())
            finally:
                failures.close_quietly(recorder, "interrupted")
        raise
    except BaseException as error:
        status = failures.status_after_failed_resume(previous) if restoring else "failed"
        failures.close_quietly(recorder, status, f"{type(error).__name__}: {error}")
        raise
    recorder.close(status="complete")
    return out


def load_resume_state(recorder, run: RunState, out: Path, previous: str | None) -> dict | None:
    """Load the store's resume state into ``run``; None when there is none. An unreadable or foreign
    state → StoreError naming the file (:func:`trainers.failures.unusable_state`); a different config →
    ConfigError."""
    try:
        state = recorder.load_state()
        if state is not None:
            run.restore(state, out)
    except ConfigError:
        raise
    except Exception as error:
        raise failures.unusable_state(out, recorder.state_path, error, previous) from None
    return state


class RunState:
    """The mutable state of a run between steps: step, epoch order, other-batch loss."""

    def __init__(self, experiment: Experiment, model, stepper, recorder, loss: str, seed: int, config: dict) -> None:
        self.experiment, self.model, self.stepper, self.recorder, self.loss = experiment, model, stepper, recorder, loss
        self.config, self.seed = config, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch_state = self.generator.get_state()
        self.order: torch.Tensor | None = None
        self.step, self.epoch, self.position = 0, 0, 0
        self.other_loss = self.batch_loss(experiment.other)
        self.initial_loss = self.other_loss   # at step 0 (also when resuming: set before restore)
        self.last_loss = math.nan
        self.boundary = False   # True between steps, when the state is consistent
        self.steppers: PhaseSteppers | None = None   # optimiser phases (trainers.phases); None: one stepper
        self.twin: LinearTwin | None = None           # train.linearized (trainers.lazy)
        self.sharpness = False                         # train.sharpness (trainers.lazy)

    @property
    def phase(self) -> int:
        """Index of the optimiser phase of the last update (0 for a one-optimiser run)."""
        return max(self.steppers.index, 0) if self.steppers is not None else 0

    @torch.no_grad()
    def batch_loss(self, indices: torch.Tensor, x: torch.Tensor | None = None) -> float:
        """Loss of the examples ``indices`` (with inputs ``x`` instead of their stored features if given)."""
        x = self.experiment.x[indices] if x is None else x
        return float(batch_loss(self.model(x), self.experiment.y[indices], self.loss))

    def inputs(self, indices: torch.Tensor, update: int) -> torch.Tensor:
        """Features of the mini-batch ``indices`` as update ``update`` (1-based) trains on them: augmented
        with the boxes of (seed, update) when ``data.augment`` is on, else the stored features."""
        x, augment = self.experiment.x[indices], self.experiment.augment
        return x if augment is None else augment(x, self.seed, update)

    def next_batch(self) -> torch.Tensor:
        """Indices of the next mini-batch; draws the epoch's permutation at its first batch."""
        e = self.experiment
        if self.position == 0:
            self.epoch_state = self.generator.get_state()
            self.order = torch.randperm(len(e.pool), generator=self.generator)
        chosen = self.order[self.position * e.batch_size: (self.position + 1) * e.batch_size]
        return e.pool[chosen]

    def peek_batch(self) -> torch.Tensor:
        """Indices of the mini-batch after the one :meth:`next_batch` just returned, without consuming
        any randomness: at the end of an epoch the next epoch's permutation is drawn from a copy of the
        generator state (the same draw :meth:`next_batch` makes at that epoch's first batch)."""
        e = self.experiment
        start = (self.position + 1) * e.batch_size
        if self.position + 1 < e.steps_per_epoch:
            return e.pool[self.order[start: start + e.batch_size]]
        saved = self.generator.get_state()
        order = torch.randperm(len(e.pool), generator=self.generator)
        self.generator.set_state(saved)
        return e.pool[order[:e.batch_size]]

    def advance(self) -> None:
        """One update, its metrics, and a checkpoint (with resume state) when the schedule says so."""
        e = self.experiment
        indices = self.next_batch()
        upcoming = self.peek_batch()
        if self.steppers is not None:
            self.stepper = self.steppers.at(self.step)
        x_batch, x_upcoming = self.inputs(indices, self.step + 1), self.inputs(upcoming, self.step + 2)
        next_loss = self.batch_loss(upcoming, x_upcoming)
        before = parameter_vector(self.model)
        result = self.stepper.step(x_batch, e.y[indices])
        update_norm = float((parameter_vector(self.model) - before).double().norm())
        if self.twin is not None:
            self.twin.step(self.step, x_batch, e.y[indices])
        loss_after = self.batch_loss(indices, x_batch)
        other_after = self.batch_loss(e.other)
        next_after = self.batch_loss(upcoming, x_upcoming)
        name = self.steppers.plan[self.phase].optimizer if self.steppers is not None else self.config["optimizer"]
        failures.check_divergence(name, self.step + 1, self.initial_loss,
                                  {"loss_after": loss_after, "other_loss_after": other_after})
        self.step += 1
        self.position += 1
        if self.position == e.steps_per_epoch:
            self.position, self.epoch = 0, self.epoch + 1
        with warnings.catch_warnings():  # first-order runs log gn_residual = NaN by design
            warnings.filterwarnings("ignore", message="non-finite gn_residual", category=RuntimeWarning)
            self.recorder.log(self.step, epoch=self.step / e.steps_per_epoch, loss=result.loss,
                              loss_after=loss_after, other_loss=self.other_loss, other_loss_after=other_after,
                              next_loss=next_loss, next_loss_after=next_after, lr=self.stepper.lr,
                              grad_norm=result.grad_norm, update_norm=update_norm, gn_residual=result.residual,
                              time=result.seconds, phase=float(self.phase))
        self.other_loss, self.last_loss = other_after, result.loss
        if self.step in e.checkpoint_steps:
            self.checkpoint()

    def checkpoint(self) -> None:
        e = self.experiment
        train_loss, train_acc = evaluate(self.model, *e.eval_train, self.loss)
        test_loss, test_acc = evaluate(self.model, *e.eval_test, self.loss)
        extra, undefined = checkpoint_scalars(self, evaluate)
        with quiet_undefined(undefined):
            self.recorder.checkpoint(self.step, epoch=self.step / e.steps_per_epoch, train_loss=train_loss,
                                     train_acc=train_acc, test_loss=test_loss, test_acc=test_acc, **extra)
        self.recorder.save_state(self.state())

    def state(self) -> dict:
        """Resume state after the current step (tensors, numbers, strings, dicts only)."""
        generator = self.epoch_state if self.position > 0 else self.generator.get_state()
        state = {"step": self.step, "epoch": self.epoch, "position": self.position, "generator": generator.clone(),
                 "model": {k: v.clone() for k, v in self.model.state_dict().items()},
                 "optimizer": self.stepper.state_dict(), "other_loss": self.other_loss, "phase": self.phase,
                 "config": json.dumps(self.config, sort_keys=True)}
        if self.twin is not None:
            state["linearized"] = self.twin.state()
        return state

    def restore(self, state: dict, path: Path) -> None:
        """Continue from ``state`` (saved by :meth:`state`); the store must have the same config."""
        saved = json.loads(state["config"])
        config = json.loads(json.dumps(self.config))
        changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        if changed:
            raise ConfigError(f"cannot resume '{path}': its config differs in {changed}; resume with the "
                              f"config it was started with")
        e = self.experiment   # an impossible state (a step past the end, behind the store, other weights): refused
        check_resume_state(state, total_steps=e.total_steps, steps_per_epoch=e.steps_per_epoch,
                           checkpoint_steps=e.checkpoint_steps, last_step=self.recorder.last_step,
                           stored_checkpoints=self.recorder.checkpoint_steps, model=self.model,
                           stored_params=stored_parameters(path))
        self.model.load_state_dict(state["model"])
        if self.steppers is not None:
            self.stepper = self.steppers.use(int(state.get("phase", 0)))
        self.stepper.load_state_dict(state["optimizer"])
        self.step, self.epoch, self.position = int(state["step"]), int(state["epoch"]), int(state["position"])
        self.generator.set_state(state["generator"])
        self.epoch_state = state["generator"]
        if self.position > 0:
            self.order = torch.randperm(len(self.experiment.pool), generator=self.generator)
        self.other_loss = float(state["other_loss"])
        if self.twin is not None:
            self.twin.restore(state["linearized"])
        self.recorder.truncate(self.step)
