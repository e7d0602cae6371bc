"""Recorder: what any training loop calls to fill a run store (schema in :mod:`dynamics.store.schema`).

The caller owns the step counter::

    with Recorder("runs/mine.zarr", model, probe=(x_probe, y_probe), schedule=log_spaced(1000, 20)) as rec:
        for step in range(1000):
            loss = train_step()
            rec.log(step, loss=loss, lr=lr)                  # buffered; cheap
            rec.checkpoint(step, test_acc=evaluate())        # stores when the schedule says so

What it promises (in full: ``docs/guide/recording.md``): every name that becomes a store key is
encoded reversibly or refused (:mod:`dynamics.store.names`; parameters and layers when the Recorder
is created, scalars at their first call). Rows are written every ``flush_every`` rows, once the oldest
has waited ``flush_secs`` (checked at each ``log``/``checkpoint`` call, also while an NTK is computed in
the background), on ``flush()`` and before ``save_state``, truncation and close; a checkpoint is
committed with the rows up to its step; after a kill at any moment the store holds every row up to its
last checkpoint or flush. Writes overlap training on a writer thread. Errors of a checkpoint raise
from its call, a background NTK's from the first call after it failed (at the latest from the stored
checkpoint ``MAX_PENDING`` = 4 later, :mod:`dynamics.pending`), naming its step; a store that lost
anything ends "failed", never "complete". Non-finite values are stored, counted and warned about once
(:mod:`dynamics.recorder_values`).

``checkpoint`` stores the given scalars, the trained parameters, the traced empirical NTK on the probe
inputs (:func:`dynamics.ntk.empirical_ntk`, (probe, probe_)) and the representations of ``layers``
(:func:`dynamics.capture.capture_representations`, (probe, unit_<layer>)). Leaving the ``with`` block
marks the store "complete", or "failed" with the error text ("interrupted" for KeyboardInterrupt).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dynamics.convert import stored_dtype, to_numpy
from dynamics.distributed import InactiveRecorder, process_rank, unwrap_model
from dynamics.mirrors import check_mirrors, close_mirrors, send
from dynamics.ntk.background import KernelWorker
from dynamics.pending import MAX_PENDING, Outbox, PendingCheckpoint
from dynamics import inputs
from dynamics.ntk.api import ntk_dtype
from dynamics.recorder_inputs import (as_tensors, check_options, check_probe_fits, check_probe_memory,
                                      check_probe_paths, probe_array, probe_index_array, probe_inputs,
                                      trained_parameters)
from dynamics.recorder_open import open_store
from dynamics.recorder_state import read_state, state_path, write_state
from dynamics.recorder_values import NonfiniteValues
from dynamics.schedules import as_schedule
from dynamics.store import schema
from dynamics.task import resolve_task
from dynamics.wrappers import canonical_parameters


class Recorder:
    """Records a training run into the zarr store at ``path`` (see the module docstring).

    Args:
        path: the store directory (``*.zarr``); must not exist unless ``resume=True``.
        model: the ``nn.Module`` being trained; its trainable parameters (those with
            ``requires_grad`` when the Recorder is created) are stored at checkpoints.
        probe: (x, y): fixed probe inputs, in the structure the model's forward takes (a tensor or
            array (N, ...), a tuple of them for positional arguments, a dict of them for keyword
            arguments; floating, integer token ids or bool; :mod:`dynamics.inputs`), and
            labels/targets (N,) or (N, O); floating values finite. Stored in the ``probe`` group
            (:mod:`dynamics.store.probe`).
        config: JSON-serialisable dict stored as the root attribute ``config``.
        layers: modules whose outputs are recorded (None → ``capture.resolve_layers`` defaults;
            an empty list → no representations).
        schedule: step → bool deciding which ``checkpoint`` calls store (None → every call stores).
        ntk: store the traced NTK on the probe inputs at each checkpoint.
        resume: open an existing store, trim what lies past its ``committed`` mark, continue it.
        ntk_chunk_size: passed to ``empirical_ntk(..., chunk_size=)``.
        flush_every: metrics rows kept in memory before a write (each write rewrites the open
            chunk of every metrics variable, so fewer, larger writes cost less).
        flush_secs: the longest time (seconds, > 0) a logged row waits in memory before it is
            written, checked at each ``log``/``checkpoint`` call (like TensorBoard's ``flush_secs``),
            also while an NTK is computed in the background.
        params: which checkpoints keep the trained parameters (root attribute ``params``, see
            :data:`dynamics.store.schema.PARAMS_MODES`): "all" (every checkpoint), "first_last" (the
            first and the latest; the rows between are NaN) or "none" (no parameter variables). None:
            "all" for a new store, the stored mode on resume; a mode that differs from a resumed
            store's raises StoreError.
        probe_index: (N,) non-negative integers: the position of each probe sample in the data set
            (stored as ``probe/probe_index``; on resume it must equal the stored one).
        task: "classification" or "regression": what the probe targets are (root attribute ``task``;
            the analysis' kernel–target alignment and linear probes depend on it). None: the config's
            key ``task``, else inferred from the config's loss, the targets and the model's output
            width (:mod:`dynamics.task`; a classification task needs non-negative integer labels;
            targets the rule finds ambiguous — 0/1 targets of a one-output model, float-typed labels
            of a multi-output one — raise ValueError asking for ``task``, except on resume, where the
            store's recorded task decides).
        ntk_background: compute the NTK of each stored checkpoint from a snapshot of
            the model on a worker thread, overlapping training (bit-identical to computing it at once;
            see :meth:`checkpoint`). Kernels are computed at once instead — :attr:`ntk_at_once`
            says why — for a model that cannot be deep-copied, whose snapshot reads state it does not
            own (a closure, a global, a class attribute: :mod:`dynamics.ntk.background`), or whose
            forward pass in eval mode draws from torch's global generators (so that the training
            loop's random stream stays reproducible). False: every NTK is computed at once.
        mirror: objects with ``log_scalars(step, scalars)`` (:mod:`dynamics.mirrors`, e.g.
            TensorBoard or W&B) that also get every logged row and stored checkpoint's scalars, as
            ``"metrics/<name>"`` / ``"checkpoints/<name>"``; closed with the Recorder.

    Raises StoreError for an existing store without ``resume``, a missing/foreign store with
    ``resume``, a probe, config or set of trained parameters (names, shapes) that differs from the
    stored one, and for parameters (or an NTK) of a dtype the resumed store's variables cannot hold
    (float64 into float32); StoreLockedError when another process writes to the store; ValueError for a
    parameter or layer name the store cannot hold (:mod:`dynamics.store.names`), for a lazy module
    not initialised yet, for a model without trained parameters when ``ntk`` is True, and for a probe the
    model cannot take (the model is run on its first two inputs: wrong width, rank or dtype, an
    output without one row per input), for a model whose NTK or representations cannot be computed
    (tried on those two inputs) and for a probe whose N×N kernel cannot fit the device's memory (with
    the estimate); TypeError for a probe of another structure or dtype kind (complex, strings);
    ValueError for a ``task`` the probe
    targets contradict (a classification task needs class labels) or cannot be inferred safely
    (:mod:`dynamics.task`).

    In a distributed job only rank 0 records: on other ranks ``Recorder(...)`` returns a no-op
    :class:`dynamics.distributed.InactiveRecorder`; a DistributedDataParallel model is unwrapped
    (see :mod:`dynamics.distributed`).
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        if cls is Recorder and process_rank() != 0:
            return InactiveRecorder(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, path: str | os.PathLike, model: nn.Module, probe: tuple[Any, Any], *,
                 config: dict | None = None, layers: str | Iterable[str] | None = None,
                 schedule: Callable[[int], bool] | None = None, ntk: bool = True, resume: bool = False,
                 ntk_chunk_size: int | None = None, flush_every: int = 1024,
                 flush_secs: float = 10.0, params: str | None = None, probe_index: Any = None,
                 ntk_background: bool = True, task: str | None = None, mirror: Iterable | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        model = unwrap_model(model)
        if not isinstance(probe, (tuple, list)) or len(probe) != 2:
            raise TypeError(f"probe must be a pair (x, y), got {type(probe).__name__}")
        x, y = probe_inputs(probe[0]), probe_array("y", probe[1])
        n_probe = inputs.n_samples(as_tensors(x))
        if y.shape[0] != n_probe:
            raise ValueError(f"probe x has {n_probe} samples but y has {y.shape[0]}")
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"config must be a dict or None, got {type(config).__name__}")
        self._flush_every, self._flush_secs = check_options(ntk, ntk_background, params, ntk_chunk_size,
                                                            flush_every, flush_secs)
        index = None if probe_index is None else probe_index_array(probe_index, n_probe)
        self._mirrors = check_mirrors(mirror)
        self._schedule = None if schedule is None else as_schedule(schedule)
        self.model, self.ntk, self.ntk_chunk_size = model, ntk, ntk_chunk_size
        if isinstance(layers, Iterable) and not isinstance(layers, str):
            layers = list(layers)  # read a generator once, here, not again in resolve_layers
        if layers == []:
            self.layers: list[str] = []
        else:
            from dynamics.capture import resolve_layers
            self.layers = resolve_layers(model, layers)
        # canonical names: without wrappers' prefixes (torch.compile's _orig_mod., ...; dynamics.wrappers)
        trained = trained_parameters(model, ntk)   # before any forward pass: a lazy module is refused
        first = next((p for p in model.parameters()), None)
        forward_drew, n_outputs = check_probe_fits(model, x, None if first is None else first.device,
                                                    None if first is None else first.dtype)
        check_probe_memory(model, n_probe, ntk)   # refuse a probe whose kernel cannot fit, with the estimate
        forward_drew = check_probe_paths(model, x, self.layers, ntk, ntk_chunk_size) or forward_drew
        try:
            self.task, task_source = resolve_task(y, task=task, config=config, n_outputs=n_outputs)
        except ValueError as err:   # targets the rule finds ambiguous: a resumed store's own task decides
            if not resume or task is not None or (isinstance(config, dict) and config.get("task") is not None):
                raise
            self.task, task_source = None, str(err)
        self._x_probe = as_tensors(x)
        self.path = Path(path)
        self._writer, self._names, self.task = open_store(self.path, resume, x, y, config, params, index, trained,
                                                          self.layers, self.task, task_source,
                                                          ntk_dtype(model) if ntk else None)
        self.params = schema.params_mode(self._writer.attrs)
        self._writer.set_attrs(status="running")
        committed = self._writer.committed
        self._last_logged: int | None = committed["step"]
        self._last_checkpoint_call: int | None = committed["checkpoint_step"]
        self._nonfinite = NonfiniteValues(self.path)
        self._outbox = Outbox(self._writer, self._nonfinite, self._flush_every, self._flush_secs)
        # NTKs of checkpoints are computed on a worker thread (see checkpoint())
        self._kernels = KernelWorker(ntk_chunk_size) if ntk and ntk_background else None
        if self._kernels is not None:   # the probe check's forward pass: may kernels go to the worker thread?
            self._kernels.note_draws(forward_drew)

    # ------------------------------------------------------------------ properties
    @property
    def last_step(self) -> int | None:
        """The last committed metrics step (rows still buffered in memory are not counted; a write in
        flight is waited for)."""
        self._writer.wait(raise_errors=False)
        return self._writer.committed["step"]

    @property
    def checkpoint_steps(self) -> list[int]:
        """Steps of the stored checkpoints, in order (a write in flight is waited for; a checkpoint
        whose NTK is still computed in the background, or whose write failed and is kept for the next
        flush or close, is listed)."""
        self._writer.wait(raise_errors=False)
        return list(self._outbox.steps)

    @property
    def ntk_at_once(self) -> str | None:
        """Why the NTKs of checkpoints are computed in the ``checkpoint`` call rather than on the worker
        thread (``ntk_background=False``, no NTK, a snapshot that is not faithful, ...), or None."""
        if not self.ntk:
            return "ntk=False"
        if self._kernels is None:
            return "ntk_background=False"
        return self._kernels.reason

    @property
    def closed(self) -> bool:
        return self._writer.closed

    def _check_open(self) -> None:
        if self._writer.closed:
            raise RuntimeError(f"the Recorder of {self.path} is closed")

    def _values(self, group: str, scalars: dict[str, Any]) -> dict[str, float]:
        """The scalars as key → float (non-finite unchanged); TypeError/ValueError naming a bad name or value."""
        return {self._names.scalar(group, name): schema.scalar_value(name, value) for name, value in scalars.items()}

    def _epoch(self, epoch: Any) -> float:
        return math.nan if epoch is None else schema.scalar_value("epoch", epoch)

    # ------------------------------------------------------------------ recording
    def log(self, step: int, epoch: Any = None, **scalars: Any) -> None:
        """Buffer one metrics row: ``step`` (int in [0, 2**63 − 1], strictly after the previous one),
        ``epoch`` (optional coordinate) and any real scalars by name (any non-empty string, see the
        module docstring). Non-finite values are stored as NaN and counted in the root attribute
        ``nonfinite`` (the first one of a Recorder is warned about); non-scalars → TypeError and values
        beyond float64 → ValueError naming the key. The row is validated here, never later.

        Raises StoreError for a write that failed since the last call (the row is kept), and the
        error of a background NTK that failed (naming its checkpoint's step)."""
        self._check_open()
        step = schema.check_step(step)
        if self._last_logged is not None and step <= self._last_logged:
            raise ValueError(f"log step {step} is not after the previous step {self._last_logged}; steps must "
                             f"increase strictly")
        epoch_value = self._epoch(epoch)
        values, events = self._nonfinite.scalars("metrics", step, self._values("metrics", scalars))
        self._last_logged = step
        self._outbox.add_row((step, epoch_value, values, [key for _, key, _ in events]))
        send(self._mirrors, step, "metrics", values)
        self._writer.report()
        self._outbox.hand_over()
        if self._outbox.due():
            self._outbox.write_rows(wait=False)

    def flush(self) -> None:
        """Write and commit the buffered metrics rows and the checkpoints waiting for their background
        NTK, and wait until every write is done.

        Raises StoreError when a write fails (the rows are kept; the next flush or close tries again),
        and the error of a background NTK that failed (naming its checkpoint's step; one per call)."""
        self._check_open()
        self._writer.wait()
        self._outbox.hand_over(keep=0)
        self._outbox.write_rows(wait=True)

    def checkpoint(self, step: int, epoch: Any = None, **scalars: Any) -> bool:
        """Store a checkpoint at ``step`` if the schedule says so; returns whether it stored.

        Stored: the scalars given (any names), the parameters (group ``params``, as the ``params``
        mode says), the traced NTK ``ntk`` (probe, probe_) unless ``ntk=False``, and ``rep_<layer>``
        (probe, unit_<layer>), all converted by :func:`dynamics.convert.to_numpy` (half precisions as
        float32); and, in the same commit, the buffered metrics rows with step ≤ ``step``. The step is
        used up (a later call must come after it) only when the checkpoint was stored: if computing or
        converting it raises (the error names the step), the same step may be checkpointed again.

        With ``ntk_background=True`` (the default) the NTK is computed from a snapshot of the model on a
        worker thread (:mod:`dynamics.ntk.background`) unless :attr:`ntk_at_once` says why not.
        Parameters and representations are taken, and the columns checked against the stored variables
        and those the pending checkpoints will create (a dtype change raises StoreError), here. Such a
        checkpoint waits in memory until its kernel is done (:class:`dynamics.pending.Outbox`); up to
        ``MAX_PENDING`` (4) wait and are committed in step order. Every Recorder call first hands over
        those whose kernel is done, without blocking; this call blocks only when ``MAX_PENDING``
        already wait (then for the oldest), or for one that has waited ``flush_secs``. A kernel that
        failed is raised by the first call after it finished — at the latest by the stored checkpoint
        ``MAX_PENDING`` later, or ``flush``/``close`` — with a note naming its step; that checkpoint
        alone is dropped and ``close`` marks the store "failed". A checkpoint call that raises it
        stores nothing either — a second note names its step, which may be checkpointed again.
        Metrics rows are never held back by a kernel.
        """
        self._check_open()
        step = schema.check_step(step)
        if self._last_checkpoint_call is not None and step <= self._last_checkpoint_call:
            raise ValueError(f"checkpoint step {step} is not after the previous checkpoint step "
                             f"{self._last_checkpoint_call}")
        values = self._values("checkpoints", scalars)   # checked at every call, stored or not: errors show early
        epoch_value = self._epoch(epoch)
        self._writer.report()
        if self._schedule is not None and not self._schedule(step):
            self._last_checkpoint_call = step
            self._outbox.hand_over()
            if self._outbox.due(count=False):
                self._outbox.write_rows(wait=False)
            return False
        try:
            self._outbox.hand_over(keep=MAX_PENDING - 1)   # room for this one: blocks only on a full queue
            self._store_checkpoint(step, epoch_value, values)
        except BaseException as err:   # this step is not stored either: say so, also under an earlier step's error
            if not any(re.search(rf"\bstep {step}\b", note) for note in getattr(err, "__notes__", [])):
                err.add_note(f"(raised by the checkpoint at step {step}, which was not stored)")
            raise
        self._last_checkpoint_call = step
        self._outbox.steps.append(step)
        send(self._mirrors, step, "checkpoints", values)
        return True

    def _store_checkpoint(self, step: int, epoch: float, scalars: dict[str, float]) -> None:
        kernels = self._kernels
        background = kernels is not None and self.ntk and kernels.may_defer
        arrays, params, x = self._model_arrays(ntk=self.ntk and not background)
        kernel = kernels.submit(self.model, x, inputs.rows(x, 0, 2)) if background else None
        if background and kernel is None:   # no faithful snapshot: computed here
            arrays = {"ntk": self._kernel_array(x), **arrays}
        values, events = self._nonfinite.scalars("checkpoints", step, scalars)
        events += self._nonfinite.arrays("checkpoints", step, arrays) + self._nonfinite.arrays("params", step, params)
        if kernel is None:
            self._outbox.hand_over(keep=0)   # the pending checkpoints are committed first (step order)
            self._outbox.append_checkpoint(step, epoch, values, arrays, params, events)
            return
        kernel_like = np.broadcast_to(np.empty((), dtype=stored_dtype(ntk_dtype(self.model))),
                                      (inputs.n_samples(x),) * 2)
        pending = PendingCheckpoint(step, epoch, values, arrays, params, events, kernel, kernel_like)
        try:   # refuse now what the writer would refuse: the kernel's dtype is the parameters' one
            self._writer.check_checkpoint(values, pending.with_kernel(kernel_like), params,
                                          ahead=self._outbox.ahead())
        except BaseException:
            kernel.cancel()
            raise
        self._outbox.add_pending(pending)

    def _model_arrays(self, ntk: bool) -> tuple[dict, dict, torch.Tensor]:
        current = canonical_parameters(self.model, trained=False)
        params = {}
        for name, key in self._names.params.items():
            if name not in current:
                raise ValueError(f"parameter {name!r}, trained when the Recorder was created, is no longer in "
                                 f"the model")
            if self.params != "none":
                p = current[name]
                params[key] = (tuple(f"{key}_dim{i}" for i in range(p.dim())), to_numpy(p, f"parameter {name!r}"))
        first = next((p for p in current.values() if p.requires_grad), None)
        x = self._x_probe
        if first is not None:   # floating inputs in the parameters' dtype; token ids and masks as they are
            x = inputs.prepare(x, first.device, first.dtype)
        arrays = {}
        if ntk:
            arrays["ntk"] = self._kernel_array(x)
        if self.layers:
            from dynamics.capture import capture_representations
            for layer, rep in capture_representations(self.model, x, self.layers).items():
                key = self._names.layers[layer]
                arrays[key] = (("probe", "unit_" + key.removeprefix("rep_")),
                               to_numpy(rep, f"the representation of {layer!r}"))
        return arrays, params, x

    def _kernel_array(self, x: torch.Tensor) -> tuple[tuple[str, str], np.ndarray]:
        from dynamics.ntk import empirical_ntk
        if self._kernels is not None:   # also learns whether the model's forward pass draws random numbers
            kernel = self._kernels.kernel_now(self.model, x)
        else:
            kernel = empirical_ntk(self.model, x, trace=True, chunk_size=self.ntk_chunk_size)
        return ("probe", "probe_"), to_numpy(kernel, "the NTK")

    def truncate(self, step: int) -> None:
        """Drop committed (and buffered) metrics and checkpoints with step > ``step`` (−1 drops all)."""
        self._check_open()
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise TypeError(f"truncate step must be an int, got {step!r} ({type(step).__name__})")
        if step < -1 or step > schema.INT64_MAX:
            raise ValueError(f"truncate step must be in [-1, 2**63 - 1] (-1 drops everything), got {step}")
        step = int(step)
        self.flush()
        self._writer.truncate(step)
        self._last_logged = self._writer.committed["step"]
        self._last_checkpoint_call = self._writer.committed["checkpoint_step"]
        self._outbox.steps = [s for s in self._outbox.steps if s <= step]

    # ------------------------------------------------------------------ resume state
    @property
    def state_path(self) -> Path:
        return state_path(self.path)

    def save_state(self, state: dict) -> None:
        """Save a trainer's resume state (tensors, numbers, strings, lists, dicts) atomically to
        ``<store>/resume/state.pt`` (:func:`dynamics.recorder_state.write_state`; a file error →
        StoreError naming the file and errno).

        The buffered rows and the pending checkpoint are written first, so the store holds every row
        logged before the state was saved: resuming from it (``truncate(state_step)``) leaves no gap."""
        self._check_open()
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        self.flush()
        write_state(self.path, state)

    def load_state(self) -> dict | None:
        """The state saved by :meth:`save_state` (``torch.load(weights_only=True)``), or None."""
        return read_state(self.path)

    # ------------------------------------------------------------------ closing
    def close(self, status: str = "complete", error: str | None = None) -> None:
        """Flush, set ``status`` ("complete" | "interrupted" | "failed") and ``error``, write the commit
        record and release the lock. Calling it again does nothing. A store that lost anything — rows
        that cannot be written (then StoreError is raised), a checkpoint whose background NTK failed
        (raised here when no earlier call raised it), a variable that could not be created — is
        closed as "failed" with the errors, never "complete"."""
        if status not in schema.STATUSES or status == "running":
            raise ValueError(f"status must be 'complete', 'interrupted' or 'failed', got {status!r}")
        if error is not None and not isinstance(error, str):
            raise TypeError(f"error must be a string or None, got {type(error).__name__}")
        if self._writer.closed:
            return
        try:
            self._outbox.close(status, error)
        finally:
            if self._kernels is not None:
                self._kernels.shutdown()
            close_mirrors(self._mirrors)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close("complete")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("interrupted")
        else:
            self.close("failed", f"{exc_type.__name__}: {exc}")
        return False

    def __repr__(self) -> str:
        state = "closed" if self._writer.closed else "open"
        self._writer.wait(raise_errors=False)
        return (f"Recorder({str(self.path)!r}, {state}, last_step={self._writer.committed['step']}, "
                f"checkpoints={len(self._outbox.steps)}, schedule={self._schedule!r})")
