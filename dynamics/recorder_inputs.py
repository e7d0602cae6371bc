"""What a :class:`dynamics.recorder.Recorder` is given, checked at its construction: the probe (finite
floating-point inputs with one leading sample dimension, labels of the same length, inputs the model
can take), the trained parameters (initialised; at least one when the NTK is recorded), the probe's
positions in the data set, and positive integer options (the names of the trained parameters:
:mod:`dynamics.recorder_names`). Each check raises TypeError/ValueError naming the bad value."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from dynamics.convert import to_numpy
from dynamics.ntk.background import call_noting_draws
from dynamics.store import schema


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
    """(name, shape, dtype) of the parameters of ``model`` with ``requires_grad``, in its order.

    ValueError naming the parameter or buffer of a lazy module (``nn.LazyLinear``, ...) that is not
    initialised yet: its shape is unknown until the model's first forward pass, which must come from
    the caller (it draws the initial values from the global generator), not from the Recorder's probe
    check. With ``ntk``, ValueError for a model without a trained parameter: its NTK is undefined."""
    lazy = [name for name, tensor in (*model.named_parameters(), *model.named_buffers()) if nn.parameter.is_lazy(tensor)]
    if lazy:
        raise ValueError(f"the parameters or buffers {', '.join(lazy)} of {type(model).__name__} are not initialised "
                         f"yet (a lazy module): their shapes are unknown; run one forward pass of the model before "
                         f"creating the Recorder")
    trained = [(name, tuple(p.shape), p.dtype) for name, p in model.named_parameters() if p.requires_grad]
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


def check_probe_fits(model: nn.Module, x: np.ndarray, device: torch.device | None,
                      dtype: torch.dtype | None) -> tuple[bool, int]:
    """Run ``model`` on the first two probe inputs (eval mode, no grad; train/eval flags restored);
    ValueError naming the probe's shape and what the model expects when it fails or does not return
    one output per input. Returns whether that forward pass drew from torch's global generators
    (:func:`dynamics.ntk.background.call_noting_draws`) and the model's outputs per sample (the
    product of the output's dimensions after the first; :func:`dynamics.task.infer_task` uses it)."""
    sample = torch.as_tensor(x[:2])
    sample = sample.to(device=device, dtype=dtype if dtype is not None and dtype.is_floating_point else None)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            out, drew = call_noting_draws(model, sample)
    except Exception as err:   # the model's own error: shapes, dtypes
        raise ValueError(f"probe x of shape {tuple(x.shape)} does not fit the model: {_expected_input(model)} "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    finally:
        for module, mode in modes:
            module.training = mode
    if not isinstance(out, torch.Tensor) or out.ndim == 0 or out.shape[0] != sample.shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"probe x of shape {tuple(x.shape)}: the model returned {got} for {sample.shape[0]} "
                         f"inputs; it must return a tensor with one row per input")
    return drew, int(np.prod(out.shape[1:], dtype=np.int64))


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
