"""The one conversion of tensors and arrays into the numpy arrays a run store holds.

Every array the Recorder stores — parameters, NTK, representations, probe inputs and labels — goes
through :func:`to_numpy`, so every path treats a dtype the same way:

- float64, float32, signed/unsigned integers and bool are kept;
- half precisions (torch ``float16`` and ``bfloat16``, numpy ``float16``) are stored as **float32**
  (exact: every half value is a float32 value; numpy has no bfloat16 and zarr no bfloat16 dtype);
- complex, string, object and other dtypes, and non-strided (sparse) tensors → TypeError naming the
  value.

The result is always a C-contiguous copy on the CPU that shares no memory with its source, so the
caller may keep training (change parameters in place) while the copy is being written.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: torch dtypes stored as they are.
_KEPT = {torch.float64, torch.float32, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
         torch.bool}
#: torch dtypes stored as float32.
_HALF = {torch.float16, torch.bfloat16}


def stored_dtype(dtype: torch.dtype | np.dtype) -> np.dtype:
    """The numpy dtype that a tensor or array of ``dtype`` is stored as (see the module docstring);
    TypeError for a dtype a run store does not hold."""
    if isinstance(dtype, torch.dtype):
        if dtype in _HALF:
            return np.dtype(np.float32)
        if dtype in _KEPT:
            return torch.empty((), dtype=dtype).numpy().dtype
        raise TypeError(f"dtype {dtype} cannot be stored (a run store holds real floats, integers and bools)")
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind not in "biuf":
        raise TypeError(f"dtype {dtype} cannot be stored (a run store holds real floats, integers and bools)")
    return dtype


def to_numpy(value: Any, what: str) -> np.ndarray:
    """``value`` (a ``torch.Tensor`` on any device, or a ``numpy.ndarray``) as the numpy array stored.

    Shapes are kept. ``what`` names the value in errors: TypeError for another type, for a dtype that
    cannot be stored (complex, strings, objects) or a sparse tensor.
    """
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.layout != torch.strided:
            raise TypeError(f"{what} is a {tensor.layout} tensor; store a dense tensor")
        try:
            target = stored_dtype(tensor.dtype)
        except TypeError as err:
            raise TypeError(f"{what}: {err}") from None
        if tensor.dtype in _HALF:
            tensor = tensor.to(torch.float32)
        tensor = tensor.resolve_conj().resolve_neg().cpu()
        array = np.array(tensor.numpy(), copy=True, order="C")
        assert array.dtype == target
        return array
    if isinstance(value, np.ndarray):
        try:
            target = stored_dtype(value.dtype)
        except TypeError as err:
            raise TypeError(f"{what}: {err}") from None
        return np.array(value, dtype=target, copy=True, order="C")
    raise TypeError(f"{what} must be a torch.Tensor or numpy array, got {type(value).__name__}")
