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
"""

from __future__ import annotations

import copy
from concurrent.futures import Future, ThreadPoolExecutor

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


class KernelWorker:
    """One worker thread computing traced NTKs of model snapshots (see the module docstring).

    Args:
        chunk_size: passed to ``empirical_ntk(..., chunk_size=)``.
    """

    def __init__(self, chunk_size: int | None = None) -> None:
        self.chunk_size = chunk_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ntk-worker")
        self._threads = torch.get_num_threads()

    def submit(self, model: nn.Module, x: torch.Tensor) -> Future | None:
        """Start Θ(x, x) (traced, shape (N, N), the trained parameters' dtype) of a snapshot of
        ``model`` taken now; None when the model cannot be snapshotted (compute it synchronously)."""
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
