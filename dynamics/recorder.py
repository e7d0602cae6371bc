"""Recorder: what any training loop calls to fill a run store (schema in :mod:`dynamics.store.schema`).

The caller owns the step counter::

    with Recorder("runs/mine.zarr", model, probe=(x_probe, y_probe), schedule=log_spaced(1000, 20)) as rec:
        for step in range(1000):
            loss = train_step()
            rec.log(step, loss=loss, lr=lr)                  # buffered; cheap
            rec.checkpoint(step, test_acc=evaluate())        # stores when the schedule says so

``log`` keeps rows in memory and writes them in blocks: every ``flush_every`` rows, when the oldest
buffered row has waited ``flush_secs`` seconds (checked at each ``log`` and ``checkpoint`` call), on
``flush()``, and before ``save_state``, truncation and close. A stored checkpoint is written together
with the buffered rows logged up to its step, and both are committed in one step: after a kill at any
moment the store holds every row up to its last checkpoint or flush. Writes run in the background
(they overlap training); ``flush()`` waits for them. A write that fails raises StoreError (from that
``flush`` or a later call) and keeps its rows for the next flush or close; a store whose rows could
not be written is closed as "failed", never "complete".
``checkpoint`` stores the given scalars, the trained parameters,
the traced empirical NTK on the probe inputs (:func:`dynamics.ntk.empirical_ntk`, (probe, probe_))
and the representations of ``layers`` (:func:`dynamics.capture.capture_representations`,
(probe, unit_<layer>)). Leaving the ``with`` block marks the store "complete", or "failed" with the
error text ("interrupted" for KeyboardInterrupt).
"""

from __future__ import annotations

import bisect
import errno
import io
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dynamics.convert import stored_dtype, to_numpy
from dynamics.distributed import InactiveRecorder, process_rank, unwrap_model
from dynamics.errors import StoreError
from dynamics.ntk.background import KernelWorker
from dynamics.pending import PendingCheckpoint, PendingCheckpoints, rows_columns
from dynamics.recorder_inputs import (check_parameter_names, check_positive, check_probe_fits, probe_array,
                                      probe_index_array)
from dynamics.schedules import as_schedule
from dynamics.task import resolve_task
from dynamics.store import schema
from dynamics.store.writer import RunWriter


#: Checkpoints whose background NTK may be in progress or waiting to be written at once; one more
#: waits for the oldest to be handed to the writer.
MAX_PENDING = 4


class Recorder:
    """Records a training run into the zarr store at ``path`` (see the module docstring).

    Args:
        path: the store directory (``*.zarr``); must not exist unless ``resume=True``.
        model: the ``nn.Module`` being trained; its trainable parameters are stored at checkpoints.
        probe: (x, y): fixed probe inputs (N, ...) and labels/targets (N,) or (N, O); finite.
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
            written, checked at each ``log``/``checkpoint`` call (like TensorBoard's ``flush_secs``).
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
            width (:mod:`dynamics.task`; a classification task needs non-negative integer labels).
        ntk_background: compute the NTK of every stored checkpoint from a snapshot of the model on a
            worker thread, overlapping training (bit-identical to computing it at once; see
            :meth:`checkpoint` for when it is written and how its errors surface). Only for a model
            whose forward pass in the probe check at construction (eval mode, two probe inputs) drew
            no random numbers from torch's global generators (the NTK runs in eval mode; a module
            that draws there anyway keeps every kernel computed at once, so the training loop's random
            stream stays reproducible). False: each checkpoint computes its NTK before returning.

    Raises StoreError for an existing store without ``resume``, a missing/foreign store with
    ``resume``, a probe or config that differs from the stored one; StoreLockedError when another
    process writes to the store; ValueError for a probe the model cannot take (the model is run on
    its first two inputs: wrong width or rank) and TypeError for a probe of another dtype kind
    (integer features, complex); ValueError for a ``task`` the probe targets contradict (a
    classification task needs class labels) or cannot be inferred safely (:mod:`dynamics.task`).

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
                 ntk_background: bool = True, task: str | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        model = unwrap_model(model)
        if not isinstance(probe, (tuple, list)) or len(probe) != 2:
            raise TypeError(f"probe must be a pair (x, y), got {type(probe).__name__}")
        x, y = probe_array("x", probe[0]), probe_array("y", probe[1])
        if x.dtype.kind != "f":
            raise TypeError(f"probe x must be floating point, got dtype {x.dtype}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"probe x has {x.shape[0]} samples but y has {y.shape[0]}")
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"config must be a dict or None, got {type(config).__name__}")
        if not isinstance(ntk, bool):
            raise TypeError(f"ntk must be True or False, got {ntk!r}")
        if params is not None:
            schema.check_params_mode(params)
        index = None if probe_index is None else probe_index_array(probe_index, x.shape[0])
        if not isinstance(ntk_background, bool):
            raise TypeError(f"ntk_background must be True or False, got {ntk_background!r}")
        if ntk_chunk_size is not None:
            check_positive("ntk_chunk_size", ntk_chunk_size)
        self._flush_every = check_positive("flush_every", flush_every)
        if isinstance(flush_secs, bool) or not isinstance(flush_secs, (int, float)) or not flush_secs > 0 \
                or not math.isfinite(flush_secs):
            raise ValueError(f"flush_secs must be a finite number of seconds > 0, got {flush_secs!r}")
        self._flush_secs = float(flush_secs)
        self._schedule = None if schedule is None else as_schedule(schedule)
        self.model, self.ntk, self.ntk_chunk_size = model, ntk, ntk_chunk_size
        if isinstance(layers, Iterable) and not isinstance(layers, str):
            layers = list(layers)  # read a generator once, here, not again in resolve_layers
        if layers == []:
            self.layers: list[str] = []
        else:
            from dynamics.capture import resolve_layers
            self.layers = resolve_layers(model, layers)
        check_parameter_names(model)
        first = next((p for p in model.parameters()), None)
        forward_drew, n_outputs = check_probe_fits(model, x, None if first is None else first.device,
                                                    None if first is None else first.dtype)
        self.task, task_source = resolve_task(y, task=task, config=config, n_outputs=n_outputs)
        self._x_probe = torch.as_tensor(x)
        self.path = Path(path)
        if resume:
            self._writer = RunWriter.resume(self.path)
            self._check_resumed(x, y, config, params, index)
            self._resume_task(task_source)
        else:
            self._writer = RunWriter.create(self.path, config=config, probe_x=x, probe_y=y, probe_index=index,
                                            attrs={"params": params or "all", **schema.identity_attrs(config),
                                                   "task": self.task, "task_source": task_source})
        self.params = schema.params_mode(self._writer.attrs)
        self._writer.set_attrs(status="running")
        committed = self._writer.committed
        self._last_logged: int | None = committed["step"]
        self._last_checkpoint_call: int | None = committed["checkpoint_step"]
        self._checkpoint_steps = self._writer.stored_steps("checkpoints").tolist()
        self._rows: list[tuple[int, float, dict[str, float], list[str]]] = []  # (step, epoch, values, nonfinite)
        self._oldest: float | None = None   # time.monotonic() when the oldest buffered row was logged
        self._names_ok: set[str] = set()
        # NTKs of checkpoints are computed on a worker thread (see checkpoint())
        self._kernels = KernelWorker(ntk_chunk_size) if ntk and ntk_background else None
        if self._kernels is not None:   # the probe check's forward pass: may kernels go to the worker thread?
            self._kernels.note_draws(forward_drew)
        self._pending = PendingCheckpoints(self._writer, self._restore)

    def _check_resumed(self, x: np.ndarray, y: np.ndarray, config: dict | None, params: str | None,
                       index: np.ndarray | None) -> None:
        try:
            stored_index = self._writer.read_probe_index()
            if index is not None and stored_index is not None and not np.array_equal(index, stored_index):
                raise StoreError(f"{self.path}: the probe_index given differs from the one stored in the run")
            stored_params = schema.params_mode(self._writer.attrs)
            if params is not None and params != stored_params:
                raise StoreError(f"{self.path}: params={params!r} differs from the store's params={stored_params!r}; "
                                 f"resume with the stored mode (or params=None)")
            stored_x, stored_y = self._writer.read_probe()
            if not (np.array_equal(stored_x, x) and np.array_equal(stored_y, y)):
                raise StoreError(f"{self.path}: the probe given differs from the probe stored in the run")
            stored = self._writer.read_config()
            if config is not None and config != stored:
                keys = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
                raise StoreError(f"{self.path}: config differs from the stored config in keys {keys}")
        except BaseException:
            self._writer.abandon()
            raise
        self._writer.del_attr("error")

    def _resume_task(self, source: str) -> None:
        """Keep the stored task; a stated one that differs → StoreError; a store written before tasks
        were recorded gets the resolved one."""
        stored = self._writer.attrs.get("task")
        if stored is None:
            self._writer.set_attrs(task=self.task, task_source=source)
        elif stored != self.task and not source.startswith("inferred"):
            self._writer.abandon()
            raise StoreError(f"{self.path}: task={self.task!r} ({source}) differs from the store's task={stored!r}")
        else:
            self.task = stored

    # ------------------------------------------------------------------ properties
    @property
    def last_step(self) -> int | None:
        """The last committed metrics step (rows still buffered in memory are not counted; a write in
        flight is waited for)."""
        if self._pending:
            try:
                self._pending.hand_over()
            except StoreError:
                pass                    # a failed write stays for the next flush, as below
        self._writer.wait(raise_errors=False)
        return self._writer.committed["step"]

    @property
    def checkpoint_steps(self) -> list[int]:
        """Steps of the stored checkpoints, in order (a write in flight is waited for; a checkpoint
        whose write failed is listed: it is kept and written by the next flush or close)."""
        self._writer.wait(raise_errors=False)
        return list(self._checkpoint_steps)

    @property
    def closed(self) -> bool:
        return self._writer.closed

    def _check_open(self) -> None:
        if self._writer.closed:
            raise RuntimeError(f"the Recorder of {self.path} is closed")

    def _scalars(self, group: str, step: int, scalars: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
        """The values as floats (non-finite ones as NaN, with a warning) and the names of the
        non-finite ones; TypeError/ValueError naming a bad name or value."""
        values, bad = {}, []
        for name, value in scalars.items():
            if name not in self._names_ok:
                schema.check_scalar_name(name, group)
                self._names_ok.add(name)
            number = schema.scalar_value(name, value)
            if not math.isfinite(number):
                warnings.warn(f"non-finite {name}={number} at step {step} is stored as NaN", RuntimeWarning,
                              stacklevel=3)
                bad.append(name)
                number = math.nan
            values[name] = number
        return values, bad

    def _epoch(self, epoch: Any) -> float:
        return math.nan if epoch is None else schema.scalar_value("epoch", epoch)

    # ------------------------------------------------------------------ recording
    def log(self, step: int, epoch: Any = None, **scalars: Any) -> None:
        """Buffer one metrics row: ``step`` (int in [0, 2**63 − 1], strictly after the previous one),
        ``epoch`` (optional coordinate) and any real scalars by name. Non-finite values are stored as
        NaN, counted in the root attribute ``nonfinite`` and warned about; non-scalars → TypeError and
        values beyond float64 → ValueError naming the key. The row is validated here, never later."""
        self._check_open()
        step = schema.check_step(step)
        if self._last_logged is not None and step <= self._last_logged:
            raise ValueError(f"log step {step} is not after the previous step {self._last_logged}; steps must "
                             f"increase strictly")
        epoch_value = self._epoch(epoch)
        values, bad = self._scalars("metrics", step, scalars)
        self._last_logged = step
        self._rows.append((step, epoch_value, values, bad))
        if self._oldest is None:
            self._oldest = time.monotonic()
        if self._pending:
            self._pending.hand_over(keep=len(self._pending))   # what is ready, without waiting
        if len(self._rows) >= self._flush_every or time.monotonic() - self._oldest >= self._flush_secs:
            self._write_rows(len(self._rows), wait=False)

    def flush(self) -> None:
        """Write and commit the buffered metrics rows, and wait until every write is done.

        Raises StoreError when a write fails (the rows are kept; the next flush or close tries again)."""
        self._check_open()
        self._writer.wait()
        self._write_rows(len(self._rows), wait=True)

    def _write_rows(self, n: int, wait: bool) -> None:
        """Hand the first ``n`` buffered rows to the writer (they leave the buffer once handed over),
        after the checkpoints pending in the background (whose rows come first)."""
        self._pending.hand_over()
        if n:
            rows = self._rows[:n]
            steps, epochs, columns, bad = rows_columns(rows)
            self._writer.append_metrics(steps, epochs, columns, nonfinite=bad, wait=False)
            self._rows = self._rows[n:]
            self._oldest = time.monotonic() if self._rows else None
        if wait:
            self._writer.wait()

    def checkpoint(self, step: int, epoch: Any = None, **scalars: Any) -> bool:
        """Store a checkpoint at ``step`` if the schedule says so; returns whether it stored.

        Stored: the scalars given (any names), the parameters (group ``params``, as the ``params``
        mode says), the traced NTK
        ``ntk`` (probe, probe_) unless ``ntk=False``, and ``rep_<layer>`` (probe, unit_<layer>), all
        converted by :func:`dynamics.convert.to_numpy` (half precisions as float32); and, in the same
        commit, the buffered metrics rows with step ≤ ``step``. The step is used up (a later call
        must come after it) only when the checkpoint was handed to the writer: if computing or
        converting it raises, the same step may be checkpointed again.

        With ``ntk_background=True`` (the default) the NTK of every stored checkpoint (of a model whose
        forward pass draws no random numbers, see ``ntk_background``) is computed from a snapshot of
        the model (:mod:`dynamics.ntk.background`) on a worker thread while training goes on; parameters and representations are taken here,
        and the columns are checked against the stored variables here (a dtype change raises
        StoreError from this call, as without it). The checkpoint waits in memory
        (:mod:`dynamics.pending`) and is handed to the writer, with its kernel and the rows up to its
        step, by the first ``log`` or ``checkpoint`` call after its kernel is done and the writer is
        free — or, waiting for it, by ``flush``, ``save_state``, ``truncate``, ``close``,
        ``last_step``, any write of metrics rows, and a checkpoint call that finds
        :data:`MAX_PENDING` waiting. Should that kernel's computation fail, that call raises its
        error (with a note naming the step): the checkpoint is dropped, its metrics rows are kept
        for the next write, and ``close`` marks the store "failed".
        """
        self._check_open()
        step = schema.check_step(step)
        if self._last_checkpoint_call is not None and step <= self._last_checkpoint_call:
            raise ValueError(f"checkpoint step {step} is not after the previous checkpoint step "
                             f"{self._last_checkpoint_call}")
        for name, value in scalars.items():   # checked at every call, stored or not: errors show early
            if name not in self._names_ok:
                schema.check_scalar_name(name, "checkpoints")
                self._names_ok.add(name)
            schema.scalar_value(name, value)
        epoch_value = self._epoch(epoch)
        if self._pending:
            self._pending.hand_over(keep=MAX_PENDING - 1)
        if self._schedule is not None and not self._schedule(step):
            self._last_checkpoint_call = step
            if self._oldest is not None and time.monotonic() - self._oldest >= self._flush_secs:
                self._write_rows(len(self._rows), wait=False)
            return False
        # the kernel at once (before the representations, as without a worker) unless the worker may take
        # it: the model's forward pass was seen to draw no random numbers (the probe check at construction)
        background = self._kernels is not None and self._kernels.may_defer
        arrays, params, x = self._model_arrays(ntk=self.ntk and not background)
        kernel = self._kernels.submit(self.model, x) if background else None
        if background and kernel is None:   # a model that cannot be snapshotted: computed here
            arrays = {"ntk": self._kernel_array(x), **arrays}
        values, bad = self._scalars("checkpoints", step, scalars)
        if kernel is None:
            self._pending.hand_over()   # earlier checkpoints are committed first (their rows come first)
        n = bisect.bisect_right([r[0] for r in self._rows], step)
        rows = self._rows[:n]
        metrics, events = None, [("checkpoints", name, step) for name in bad]
        if kernel is None:
            if rows:
                m_steps, m_epochs, m_cols, m_bad = rows_columns(rows)
                metrics, events = (m_steps, m_epochs, m_cols), events + m_bad
            self._writer.append_checkpoint(step, epoch_value, values, arrays, params, metrics=metrics,
                                           nonfinite=events, wait=False)
        else:
            kernel_like = np.broadcast_to(np.empty((), dtype=stored_dtype(x.dtype)), (len(x),) * 2)
            pending = PendingCheckpoint(step, epoch_value, values, arrays, params, events, rows, kernel, kernel_like)
            try:   # refuse now what the writer would refuse: the kernel's dtype is the parameters' one
                self._writer.check_checkpoint(values, pending.with_kernel(kernel_like), params,
                                              ahead=self._pending.first_layout())
            except BaseException:
                kernel.cancel()
                raise
            self._pending.add(pending)
        self._rows = self._rows[n:]
        self._oldest = time.monotonic() if self._rows else None
        self._last_checkpoint_call = step
        self._checkpoint_steps.append(step)
        return True

    def _restore(self, dropped: PendingCheckpoint) -> None:
        """Take back the rows of a checkpoint dropped from the background queue; forget its step."""
        self._rows = dropped.rows + self._rows
        if self._rows and self._oldest is None:
            self._oldest = time.monotonic()
        self._checkpoint_steps.remove(dropped.step)

    def _stop_kernels(self) -> None:
        if self._kernels is not None:
            self._kernels.shutdown()

    def _model_arrays(self, ntk: bool) -> tuple[dict, dict, torch.Tensor]:
        params = {}
        first = None
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            first = p if first is None else first
            if self.params == "none":
                continue
            key = schema.store_name(name)
            params[key] = (tuple(f"{key}_dim{i}" for i in range(p.dim())), to_numpy(p, f"parameter {name!r}"))
        arrays = {}
        x = self._x_probe
        if first is not None:
            x = x.to(device=first.device, dtype=first.dtype if x.is_floating_point() else x.dtype)
        if ntk:
            arrays["ntk"] = self._kernel_array(x)
        if self.layers:
            from dynamics.capture import capture_representations
            for layer, rep in capture_representations(self.model, x, self.layers).items():
                key = schema.store_name(layer)
                arrays[f"rep_{key}"] = (("probe", f"unit_{key}"), to_numpy(rep, f"the representation of {layer!r}"))
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
        self._checkpoint_steps = [s for s in self._checkpoint_steps if s <= step]

    # ------------------------------------------------------------------ resume state
    @property
    def state_path(self) -> Path:
        return self.path / "resume" / "state.pt"

    def save_state(self, state: dict) -> None:
        """Save a trainer's resume state (tensors, numbers, strings, lists, dicts) atomically to
        ``<store>/resume/state.pt`` (torch.save to a temporary file, then os.replace). A file error
        (disk full, read-only) → StoreError naming the file and errno; the temporary file is removed.

        The buffered metrics rows are written first, so the store holds every row logged before the
        state was saved: resuming from it (``truncate(state_step)``) leaves no gap in ``metrics``."""
        self._check_open()
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        self.flush()
        buffer = io.BytesIO()   # serialised first, so that a file error is an OSError with its errno
        torch.save(state, buffer)
        tmp = self.state_path.with_name(f"state.pt.{os.getpid()}.tmp")
        try:
            self.state_path.parent.mkdir(exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.write(buffer.getbuffer())
            os.replace(tmp, self.state_path)
        except OSError as err:
            tmp.unlink(missing_ok=True)   # never leave a partial file holding the space close() needs
            raise StoreError(f"cannot save the resume state {self.state_path}: {err.strerror} "
                             f"({errno.errorcode.get(err.errno, err.errno)})") from None

    def load_state(self) -> dict | None:
        """The state saved by :meth:`save_state` (``torch.load(weights_only=True)``), or None."""
        if not self.state_path.is_file():
            return None
        return torch.load(self.state_path, weights_only=True, map_location="cpu")

    # ------------------------------------------------------------------ closing
    def close(self, status: str = "complete", error: str | None = None) -> None:
        """Flush, set ``status`` ("complete" | "interrupted" | "failed") and ``error``, write the commit
        record and release the lock. Calling it again does nothing. When buffered rows cannot be
        written, the store is closed as "failed" with the write's error and StoreError is raised."""
        if status not in schema.STATUSES or status == "running":
            raise ValueError(f"status must be 'complete', 'interrupted' or 'failed', got {status!r}")
        if error is not None and not isinstance(error, str):
            raise TypeError(f"error must be a string or None, got {type(error).__name__}")
        if self._writer.closed:
            return
        try:
            self._close(status, error)
        finally:
            self._stop_kernels()

    def _close(self, status: str, error: str | None) -> None:
        kernel_error = None
        try:
            self._pending.hand_over()
        except StoreError:
            pass                        # a failed write: tried again below
        except Exception as err:        # the background NTK failed: its rows are back in the buffer
            kernel_error = err
        for attempt in (1, 2):    # the first try may only report a write that failed in the background
            try:
                self._write_rows(len(self._rows), wait=True)
                break
            except BaseException as err:
                if attempt == 2 or not isinstance(err, StoreError):
                    dropped = f"; {len(self._rows)} buffered metrics rows were not written" if self._rows else ""
                    try:
                        self._writer.close("failed", f"{type(err).__name__}: {err}{dropped}")
                    except StoreError:
                        pass            # the disk may still be full: the write error above says why
                    raise
        if kernel_error is not None:
            failure = f"{type(kernel_error).__name__}: {kernel_error}"
            if status == "complete":
                self._writer.close("failed", failure)
                raise kernel_error
            error = f"{error}; also: {failure}" if error else failure
        self._writer.close(status, error)

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
                f"checkpoints={len(self._checkpoint_steps)}, schedule={self._schedule!r})")
