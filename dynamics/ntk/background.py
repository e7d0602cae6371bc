"""The traced empirical NTK of a snapshot of a model, computed on a worker thread.

A Recorder's checkpoint needs Θ(probe, probe) of the model *as it is at that step*, but the training
loop goes on changing the parameters in place. :class:`KernelWorker` takes a snapshot — a
``copy.deepcopy`` of the model: parameters, buffers and everything its attributes reach, at the moment
of ``submit`` — and computes ``empirical_ntk(snapshot, x, trace=True, chunk_size=...)`` on one worker
thread, so the kernel (about ten backward passes of the probe batch) overlaps the next training
steps on another core instead of stopping them.

The result is the same function of the same numbers on the same kernels: bit-identical to calling
``empirical_ntk`` on the model in the caller's thread at that step (the worker thread runs with the
process's intra-op thread count, as the caller does) — provided the snapshot holds every tensor the
model's forward pass reads. A deep copy does not follow every reference: a function stored on the
module (``self.f = lambda h: tanh(other(h))``) keeps reaching the live ``other`` through its closure,
and so do globals read in ``forward``, class attributes, hooks that read outside tensors, and a
module's own ``__deepcopy__`` that shares state. Such a kernel would be silently wrong once the
caller changes that state after ``checkpoint`` (and fail in autograd when it changes in place during
the computation). So every snapshot is checked before it is used (:func:`outside_tensors`): its
forward pass is run on two probe inputs under a :class:`torch.overrides.TorchFunctionMode` that sees
every tensor given to a torch function; a tensor that is neither the snapshot's (a copy the deep copy
made), nor the input, nor the output of an earlier call in that pass is state the snapshot does not
own. Then — and when the model cannot be deep-copied at all (a non-leaf tensor, a lock, an open file)
— ``submit`` returns None for good, the caller computes every kernel itself, and
:attr:`KernelWorker.reason` says why. (The check is conservative: a read-only global constant also
counts as outside state. A forward pass that takes another path under autograd than without it is
checked on the path without it. A snapshot whose forward pass raises in the check gets that one
kernel computed at once, where the model's error shows.) An error of the computation is raised by
``Future.result()``.

Random numbers. The NTK runs the model in eval mode (dropout off), but a module may still draw from
torch's global generators there (a noise layer that ignores the train/eval flag, a user module calling
``torch.rand``). On the worker thread those draws would happen at moments set by thread timing, so the
training loop's own random stream — and with it the run — would no longer be reproducible. The kernel
is therefore computed in the background only once a forward pass of the model in eval mode has been
seen to leave the global CPU and CUDA generator states unchanged (:meth:`KernelWorker.note_draws`: the
Recorder's probe check at construction, a kernel computed at once, :meth:`KernelWorker.kernel_now`,
and the snapshot check of every ``submit``); after one that changed them, ``submit`` returns None for
good. (A module that draws only while gradients are recorded would pass these checks unseen.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from dynamics import inputs
from dynamics.ntk.api import empirical_ntk


def _storage_key(tensor: torch.Tensor) -> tuple:
    """What identifies the memory of ``tensor`` (views share it): its device and storage address."""
    try:
        return (tensor.device.type, tensor.device.index, tensor.untyped_storage().data_ptr())
    except Exception:   # no storage (a sparse or nested tensor): the object itself
        return ("object", id(tensor))


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in ``value``, looking into tuples, lists and dicts (a torch function's arguments)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


class _OutsideTensors(TorchFunctionMode):
    """Notes every tensor given to a torch function whose memory is not in ``owned``; the outputs of
    each call join ``owned``."""

    def __init__(self, owned: set) -> None:
        super().__init__()
        self.owned, self.found = owned, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for value in _tensors((args, kwargs)):
            if _storage_key(value) not in self.owned:
                self.found.append(f"a tensor of shape {tuple(value.shape)} given to {getattr(func, '__name__', func)}")
                self.owned.add(_storage_key(value))   # named once
        out = func(*args, **kwargs)
        for value in _tensors(out):
            self.owned.add(_storage_key(value))
        return out


def snapshot(model: nn.Module) -> tuple[nn.Module, set] | None:
    """A deep copy of ``model`` (parameters and buffers cloned, same devices and dtypes) and the memory
    of every tensor the copy made (:func:`_storage_key`), or None when the model cannot be deep-copied."""
    memo: dict = {}
    try:
        copied = copy.deepcopy(model, memo)
    except Exception:   # deepcopy fails in many ways (non-leaf tensors, locks, handles): no snapshot
        return None
    return copied, {_storage_key(value) for value in memo.values() if isinstance(value, torch.Tensor)}


class SnapshotCheckFailed(Exception):
    """The forward pass of a snapshot raised while it was checked (:func:`outside_tensors`)."""


def outside_tensors(copied: nn.Module, owned: set, sample: torch.Tensor) -> tuple[list[str], bool]:
    """(what the forward pass of the snapshot ``copied`` on ``sample`` reads that the snapshot does not
    own — see the module docstring —, whether it drew from the global generators). Run in eval mode
    without gradients; the train/eval flags are restored. SnapshotCheckFailed when the forward pass
    raises."""
    modes = [(m, m.training) for m in copied.modules()]
    watch = _OutsideTensors(owned | {_storage_key(leaf) for leaf in _tensors(sample)})

    def watched() -> Any:
        with watch:
            return inputs.call(copied, sample)   # a tensor, or a tuple/dict of inputs (dynamics.inputs)
    try:
        copied.eval()
        with torch.no_grad():
            _, drew = call_noting_draws(watched)
    except Exception as err:
        raise SnapshotCheckFailed(f"{type(err).__name__}: {err}") from err
    finally:
        for module, mode in modes:
            module.training = mode
    return watch.found, drew


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
        #: why kernels are computed in the caller's thread (None while they may go to the worker)
        self.reason: str | None = None

    def note_draws(self, drew: bool) -> None:
        """Record whether a forward pass of the model in eval mode drew from the global generators
        (see the module docstring; once one did, it stays recorded)."""
        self._draws_random = bool(self._draws_random) or drew
        if self._draws_random and self.reason is None:
            self.reason = "the model's forward pass draws from torch's global random generators in eval mode"

    def kernel_now(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Θ(x, x) of ``model`` computed in the calling thread; records (:meth:`note_draws`) whether the
        computation drew from the global generators."""
        kernel, drew = call_noting_draws(empirical_ntk, model, x, trace=True, chunk_size=self.chunk_size)
        self.note_draws(drew)
        return kernel

    @property
    def may_defer(self) -> bool:
        """True once a forward pass has shown that the model leaves the global generators untouched (and
        none has shown otherwise), and while every snapshot was faithful: kernels may go to the worker."""
        return self._draws_random is False and self.reason is None

    def submit(self, model: nn.Module, x: torch.Tensor, sample: torch.Tensor) -> Future | None:
        """Start Θ(x, x) (traced, shape (N, N), the trained parameters' dtype) of a snapshot of
        ``model`` taken now, after checking the snapshot on ``sample`` (two probe inputs,
        :func:`outside_tensors`); None — compute it with :meth:`kernel_now`, now and from then on, as
        :attr:`reason` says — when the model cannot be snapshotted, when its snapshot reads state it
        does not own, or when a forward pass draws from the global generators (or none has yet shown
        that it does not); None for this kernel only when the snapshot's forward pass raises."""
        if not self.may_defer:
            return None
        taken = snapshot(model)
        if taken is None:
            self.reason = "the model cannot be deep-copied"
            return None
        copied, owned = taken
        try:
            outside, drew = outside_tensors(copied, owned, sample)
        except SnapshotCheckFailed:   # computed at once, where the model's error shows; the next may defer
            return None
        self.note_draws(drew)
        if outside:
            self.reason = (f"a snapshot of the model does not own all it reads ({outside[0]}; e.g. a closure, "
                           f"a global or a class attribute reaching outside state)")
        if not self.may_defer:
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
