"""The traced empirical NTK of a snapshot of a model, computed on a worker thread.

A Recorder's checkpoint needs Θ(probe, probe) of the model *as it is at that step*, but the training
loop goes on changing the parameters in place. :class:`KernelWorker` takes a snapshot — a
``copy.deepcopy`` of the model: parameters, buffers and every sub-module's state at the moment of
``submit`` — and computes ``empirical_ntk(snapshot, x, trace=True, chunk_size=...)`` on one worker
thread, so the kernel (about ten backward passes of the probe batch) overlaps the next training
steps on another core instead of stopping them.

The result is the same function of the same numbers on the same kernels: bit-identical to calling
``empirical_ntk`` on the model in the caller's thread at that step (the worker thread runs with the
process's intra-op thread count, as the caller does). A model that cannot be deep-copied (it holds a
non-leaf tensor, a lock, an open file...) gets no snapshot: ``submit`` returns None and the caller
computes the kernel itself. An error of the computation is raised by ``Future.result()``.

Random numbers. The NTK runs the model in eval mode (dropout off), but a module may still draw from
torch's global generators there (a noise layer that ignores the train/eval flag, a user module calling
``torch.rand``). On the worker thread those draws would happen at moments set by thread timing, so the
training loop's own random stream — and with it the run — would no longer be reproducible. The kernel
is therefore computed in the background only once a forward pass of the model in eval mode has been
seen to leave the global CPU and CUDA generator states unchanged (:meth:`KernelWorker.note_draws`: the
Recorder's probe check at construction, which runs the model on two probe inputs without gradients,
or a kernel computed at once, :meth:`KernelWorker.kernel_now`); after one that changed them,
``submit`` returns None for good and the caller computes every kernel itself, as without a worker
thread. (A module that draws only while gradients are recorded would pass the probe check unseen.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import nn

from dynamics.ntk.api import empirical_ntk


def snapshot(model: nn.Module) -> nn.Module | None:
    """A deep copy of ``model`` (parameters and buffers cloned, same devices and dtypes), or None
    when the model cannot be deep-copied."""
    try:
        return copy.deepcopy(model)
    except Exception:   # deepcopy fails in many ways (non-leaf tensors, locks, handles): no snapshot
        return None


def generator_states() -> list[torch.Tensor]:
    """The states of torch's global CPU generator and, where CUDA is initialised, of every CUDA device's."""
    states = [torch.random.get_rng_state()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states += torch.cuda.get_rng_state_all()
    return states


def call_noting_draws(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, bool]:
    """``fn(*args, **kwargs)`` and whether it changed the state of torch's global generators
    (:func:`generator_states`), i.e. drew random numbers from them."""
    before = generator_states()
    result = fn(*args, **kwargs)
    after = generator_states()
    return result, len(before) != len(after) or not all(torch.equal(a, b) for a, b in zip(before, after))


class KernelWorker:
    """One worker thread computing traced NTKs of model snapshots (see the module docstring).

    Args:
        chunk_size: passed to ``empirical_ntk(..., chunk_size=)``.
    """

    def __init__(self, chunk_size: int | None = None) -> None:
        self.chunk_size = chunk_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ntk-worker")
        self._threads = torch.get_num_threads()
        self._draws_random: bool | None = None   # unknown until a forward pass was seen (note_draws)

    def note_draws(self, drew: bool) -> None:
        """Record whether a forward pass of the model in eval mode drew from the global generators
        (see the module docstring; once one did, it stays recorded)."""
        self._draws_random = bool(self._draws_random) or drew

    def kernel_now(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Θ(x, x) of ``model`` computed in the calling thread; records (:meth:`note_draws`) whether the
        computation drew from the global generators."""
        kernel, drew = call_noting_draws(empirical_ntk, model, x, trace=True, chunk_size=self.chunk_size)
        self.note_draws(drew)
        return kernel

    @property
    def may_defer(self) -> bool:
        """True once a forward pass has shown that the model leaves the global generators untouched (and
        none has shown otherwise): kernels may then go to the worker thread."""
        return self._draws_random is False

    def submit(self, model: nn.Module, x: torch.Tensor) -> Future | None:
        """Start Θ(x, x) (traced, shape (N, N), the trained parameters' dtype) of a snapshot of
        ``model`` taken now; None — compute it with :meth:`kernel_now` — when the model cannot be
        snapshotted, or when no forward pass has yet shown (:meth:`note_draws`) that the model leaves
        the global generators untouched (or one showed that it does not)."""
        if not self.may_defer:
            return None
        copied = snapshot(model)
        if copied is None:
            return None
        self._threads = torch.get_num_threads()
        return self._executor.submit(self._kernel, copied, x)

    def _kernel(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if torch.get_num_threads() != self._threads:   # the caller's setting, made after this thread started
            torch.set_num_threads(self._threads)
        return empirical_ntk(model, x, trace=True, chunk_size=self.chunk_size)

    def shutdown(self) -> None:
        """Wait for the kernel in progress, if any, and stop the thread."""
        self._executor.shutdown(wait=True)
