"""What a :class:`dynamics.recorder.Recorder` is given, checked at its construction: the probe (inputs in
the structure the model's forward takes — a tensor, a tuple or a dict of tensors or arrays, floating
(finite), integer token ids or bool, every leaf with one leading sample dimension of the same length
(:mod:`dynamics.inputs`) — labels of that length, inputs the model can take, and the NTK and the
representations computed on two of them), the trained parameters (initialised; at least one when the NTK
is recorded), the probe's positions in the data set, the memory the probe's NTK needs, and positive
integer options (the names of the trained parameters:
:mod:`dynamics.recorder_names`). Each check raises TypeError/ValueError naming the bad value."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from dynamics import inputs
from dynamics.convert import to_numpy
from dynamics.ntk.background import call_noting_draws
from dynamics.store import schema
from dynamics.wrappers import canonical_parameters


def probe_array(name: str, value: Any) -> np.ndarray:
    """The probe's ``x`` or ``y`` (``name``) as a numpy array (:func:`dynamics.convert.to_numpy`);
    ValueError for no leading sample dimension, no sample, or a NaN/Inf in a floating-point array."""
    value = to_numpy(value, f"probe {name}")
    if value.ndim == 0 or value.shape[0] == 0:
        raise ValueError(f"probe {name} needs a leading sample dimension with at least one sample, "
                         f"got shape {value.shape}")
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        raise ValueError(f"probe {name} contains NaN or Inf ({int(np.sum(~np.isfinite(value)))} values)")
    return value


def probe_inputs(value: Any) -> np.ndarray | tuple | dict:
    """The probe's model inputs as numpy arrays (:func:`probe_array` per leaf) in the structure the
    model takes: one array/tensor, a tuple/list of them (positional arguments → a tuple) or a dict
    with identifier keys (keyword arguments). TypeError for another structure or leaf type, ValueError
    for leaves of different lengths (the message lists every leaf's shape and dtype)."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return probe_array("x", value)
    if isinstance(value, Mapping):
        if not value:
            raise ValueError("probe x is an empty dict; give at least one input")
        for key in value:
            if not isinstance(key, str) or not key.isidentifier():
                raise TypeError(f"probe x dict keys must be keyword-argument names (identifiers), got {key!r}")
        arrays: np.ndarray | tuple | dict = {k: probe_array(f"x[{k!r}]", v) for k, v in value.items()}
    elif isinstance(value, (tuple, list)):
        if not value:
            raise ValueError("probe x is an empty sequence; give at least one input")
        arrays = tuple(probe_array(f"x[{i}]", v) for i, v in enumerate(value))
    else:
        raise TypeError(f"probe x must be a tensor/array, a tuple of them or a dict of them, got {type(value).__name__}")
    inputs.check_inputs(as_tensors(arrays), "probe x")   # one sample count in every leaf
    return arrays


def as_tensors(x: np.ndarray | tuple | dict) -> inputs.Inputs:
    """The probe inputs of :func:`probe_inputs` as CPU tensors (sharing the arrays' memory)."""
    return torch.as_tensor(x) if isinstance(x, np.ndarray) else inputs.map_leaves(torch.as_tensor, x)


def same_inputs(a: np.ndarray | tuple | dict, b: np.ndarray | tuple | dict) -> bool:
    """Whether two probe inputs have the same structure, keys, shapes, dtypes kinds and values."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, Mapping) != isinstance(b, Mapping) or len(a) != len(b):
        return False
    if isinstance(a, Mapping):
        return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    return all(np.array_equal(u, v) for u, v in zip(a, b))


def probe_index_array(value: Any, n: int) -> np.ndarray:
    """``value`` as (n,) int64 positions of the probe samples in the data set; TypeError for a
    non-integer array, ValueError for another length or a negative entry."""
    index = to_numpy(np.asarray(value) if isinstance(value, (list, tuple)) else value, "probe_index")
    if index.dtype.kind not in "iu":
        raise TypeError(f"probe_index must hold integers, got dtype {index.dtype}")
    if index.shape != (n,):
        raise ValueError(f"probe_index must have shape ({n},), one entry per probe sample, got {index.shape}")
    if index.size and index.min() < 0:
        raise ValueError(f"probe_index must be >= 0, got {int(index.min())}")
    return index.astype(np.int64)


def trained_parameters(model: nn.Module, ntk: bool) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(canonical name, shape, dtype) of the parameters of ``model`` with ``requires_grad``, in its order
    (:func:`dynamics.wrappers.canonical_parameters`: without wrappers' prefixes).

    ValueError naming the parameters or buffers of a lazy module (``nn.LazyLinear``, ...) that are not
    initialised yet: their shapes are unknown until the model's first forward pass, which must come from
    the caller (it draws the initial values from the global generator), not from the Recorder's probe
    check. With ``ntk``, ValueError for a model without a trained parameter: its NTK is undefined."""
    lazy = [name for name, tensor in (*model.named_parameters(), *model.named_buffers()) if nn.parameter.is_lazy(tensor)]
    if lazy:
        raise ValueError(f"the parameters or buffers {', '.join(lazy)} of {type(model).__name__} are not initialised "
                         f"yet (a lazy module): their shapes are unknown; run one forward pass of the model before "
                         f"creating the Recorder")
    trained = [(name, tuple(p.shape), p.dtype) for name, p in canonical_parameters(model).items()]
    if ntk and not trained:
        raise ValueError(f"{type(model).__name__} has no parameter with requires_grad=True, so its NTK is undefined; "
                         f"pass ntk=False to record it without the NTK")
    return trained


def _expected_input(model: nn.Module) -> str:
    """What the first layer of ``model`` that declares it says about its input, for error messages."""
    for name, module in model.named_modules():
        for attr, what in (("in_features", "input features"), ("in_channels", "input channels")):
            if isinstance(getattr(module, attr, None), int):
                return f"its first layer {name or type(module).__name__!r} expects {getattr(module, attr)} {what}"
    return "see the model's forward"


def _probe_text(x: inputs.Inputs) -> str:
    if isinstance(x, torch.Tensor):
        return f"probe x of shape {tuple(x.shape)}"
    return f"probe x = {inputs.describe(x)}"


def check_probe_fits(model: nn.Module, x: np.ndarray | tuple | dict, device: torch.device | None,
                     dtype: torch.dtype | None) -> tuple[bool, int]:
    """Run ``model`` on the first two probe inputs (eval mode, no grad; train/eval flags restored;
    floating leaves cast to ``dtype``, integer ones kept); ValueError naming the probe's structure,
    shapes and dtypes and what the model expects when it fails, or when the studied output
    (:func:`dynamics.inputs.select_output`) does not have one row per input. Returns whether that
    forward pass drew from torch's global generators (:func:`dynamics.ntk.background.call_noting_draws`)
    and the model's outputs per sample (the product of the studied output's dimensions after the first;
    :func:`dynamics.task.infer_task` uses it)."""
    whole = as_tensors(x)
    sample = inputs.prepare(inputs.rows(whole, 0, 2), device, dtype if dtype is not None and dtype.is_floating_point
                            else None)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            out, drew = call_noting_draws(inputs.call, model, sample)
    except Exception as err:   # the model's own error: shapes, dtypes
        first = str(err).splitlines()[0] if str(err) else ""
        if isinstance(err, NotImplementedError) and 'missing the required "forward"' in first:
            raise ValueError(f"{type(model).__name__} defines no forward(), so the Recorder cannot run it on the "
                             f"probe: define forward(x) returning the outputs to study ({first})") from None
        raise ValueError(f"{_probe_text(whole)} does not fit the model: {_expected_input(model)} "
                         f"({type(err).__name__}: {first})") from None
    finally:
        for module, mode in modes:
            module.training = mode
    n = inputs.n_samples(sample)
    try:
        out = inputs.select_output(out)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{_probe_text(whole)}: {err}") from None
    if out.ndim == 0 or out.shape[0] != n:
        raise ValueError(f"{_probe_text(whole)}: the model returned {tuple(out.shape)} for {n} inputs; it must "
                         f"return a tensor with one row per input")
    return drew, int(np.prod(out.shape[1:], dtype=np.int64))


def check_probe_paths(model: nn.Module, x: np.ndarray | tuple | dict, layers: list[str], ntk: bool,
                      chunk_size: int | None) -> bool:
    """Run what every checkpoint will run — the traced NTK (:func:`dynamics.ntk.empirical_ntk`) and the
    representations of ``layers`` (:func:`dynamics.capture.capture_representations`) — on the first two
    probe inputs, so that a model no path can serve is refused here, when the Recorder is created, and
    not at a checkpoint or at ``close()``. ValueError naming the part that failed and its error.
    Returns whether those computations drew from torch's global generators."""
    from dynamics.capture import capture_representations
    from dynamics.ntk import empirical_ntk
    first = next((p for p in model.parameters()), None)
    sample = inputs.prepare(inputs.rows(as_tensors(x), 0, 2), None if first is None else first.device,
                            None if first is None or not first.is_floating_point() else first.dtype)
    drew = False
    for what, run in (("the NTK", lambda: empirical_ntk(model, sample, chunk_size=chunk_size) if ntk else None),
                      ("the representations", lambda: capture_representations(model, sample, layers)
                       if layers else None)):
        try:
            _, drew_now = call_noting_draws(run)
        except Exception as err:
            raise ValueError(f"{what} of {type(model).__name__} cannot be computed on the probe (tried on its first "
                             f"two inputs when the Recorder was created): {type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''}") from err
        drew = drew or drew_now
    return drew


def check_probe_memory(model: nn.Module, n: int, ntk: bool) -> None:
    """ValueError when the traced probe NTK of ``n`` samples cannot fit the memory of the device holding
    the model (:func:`dynamics.ntk.budget.probe_memory`: the N×N kernel, its stored copy and the
    working budget, against the machine's physical memory or the GPU's), with the estimate."""
    if not ntk:
        return
    from dynamics.ntk import budget
    from dynamics.ntk.api import ntk_dtype
    first = next((p for p in model.parameters()), None)
    itemsize = torch.empty((), dtype=ntk_dtype(model)).element_size()
    needed = budget.probe_memory(n, itemsize)
    device = first.device if first is not None else torch.device("cpu")
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > total:
        raise ValueError(f"a probe of {n} samples needs about {budget.memory_text(needed)} per checkpoint for its "
                         f"NTK ({n}×{n} kernel of {budget.memory_text(n * n * itemsize)}, stored copies and the "
                         f"working budget), more than the {budget.memory_text(total)} of the {device.type} device; "
                         f"use a smaller probe, or ntk=False")


def check_positive(name: str, value: Any) -> int:
    """``value`` if it is an int ≥ 1; TypeError (not an int, or a bool) or ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_options(ntk: Any, ntk_background: Any, params: Any, ntk_chunk_size: Any, flush_every: Any,
                  flush_secs: Any) -> tuple[int, float]:
    """Check the Recorder's options (TypeError/ValueError naming the bad one); (flush_every, flush_secs)."""
    for option, value in (("ntk", ntk), ("ntk_background", ntk_background)):
        if not isinstance(value, bool):
            raise TypeError(f"{option} must be True or False, got {value!r}")
    if params is not None:
        schema.check_params_mode(params)
    if ntk_chunk_size is not None:
        check_positive("ntk_chunk_size", ntk_chunk_size)
    flush_every = check_positive("flush_every", flush_every)
    if isinstance(flush_secs, bool) or not isinstance(flush_secs, (int, float)) or not flush_secs > 0 \
            or not math.isfinite(flush_secs):
        raise ValueError(f"flush_secs must be a finite number of seconds > 0, got {flush_secs!r}")
    return flush_every, float(flush_secs)
