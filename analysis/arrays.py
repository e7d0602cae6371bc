"""Conversion of user arrays (numpy, torch, xarray, dask) to float64 numpy, with input checks.

Every array function of :mod:`analysis` funnels its inputs through :func:`as_float_matrix` or
:func:`as_float_array`, so that bad input raises one clear ``TypeError``/``ValueError`` naming the
argument, and numerics always run in float64 (a float32 input only loses what it never had).
Feature statistics read their features through :func:`feature_matrix`, which also applies the
exact power-of-two rescaling of :mod:`analysis.scaling`.
"""

from __future__ import annotations

import warnings

import numpy as np

from analysis.scaling import scaled
from dynamics.task import regression_targets


def _native_dtype(x: object) -> np.dtype:
    """The floating dtype ``x`` carries (float32 for a float32 tensor), used for round-off tolerances."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return np.dtype(np.float64)
    if type(dtype).__module__.startswith("torch"):
        return np.dtype(str(dtype).removeprefix("torch."))
    return np.dtype(dtype)


def native_eps(x: object) -> float:
    """Machine epsilon of ``x``'s own floating dtype (float64 eps for integer input)."""
    dtype = _native_dtype(x)
    return float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else float(np.finfo(np.float64).eps)


def as_float_array(x: object, name: str) -> np.ndarray:
    """``x`` (numpy array, torch tensor, xarray DataArray, dask array, nested list) as float64 numpy.

    Raises TypeError for non-numeric input and ValueError for NaN/inf entries, naming ``name``.
    """
    if x is None or isinstance(x, (str, bytes, dict)):
        raise TypeError(f"{name} must be an array (numpy, torch or xarray), got {type(x).__name__}")
    if type(x).__module__.startswith("torch"):
        x = x.detach().to("cpu")
        if x.is_complex():
            raise TypeError(f"{name} must be real, got a complex tensor of dtype {x.dtype}")
        x = x.double().numpy()
    elif hasattr(x, "compute") and hasattr(x, "dtype"):  # dask array or dask-backed DataArray
        x = x.compute()
    x = getattr(x, "values", x) if not isinstance(x, np.ndarray) else x
    try:
        arr = np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - report any conversion failure the same way
        raise TypeError(f"{name} could not be read as an array: {exc}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN or infinite entries")
    return arr


def as_float_matrix(x: object, name: str, *, min_rows: int = 1) -> np.ndarray:
    """``x`` as a float64 (N, D) matrix; a 1-D input of length N is read as (N, 1).

    Inputs with more than two dimensions are flattened after the first (sample) dimension.
    Raises ValueError when N < ``min_rows`` or D == 0.
    """
    arr = as_float_array(x, name)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have a sample dimension, got a scalar")
    if arr.ndim == 1:
        arr = arr[:, None]
    elif arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} samples (rows), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no features (columns), shape {arr.shape}")
    return arr


def feature_matrix(x: object, name: str, *, min_rows: int = 1, centre: bool = False) -> tuple[np.ndarray | None, int]:
    """The one way a feature statistic (CKA, RBF CKA, effective rank, linear probe) reads its features:
    :func:`as_float_matrix`, then :func:`analysis.scaling.scaled` — column-centred when the statistic
    centres, divided by 2^e, e the binary exponent of the largest entry (exact), so features of
    1e±300 give the value of the unscaled ones. Returns (X·2^−e, e); (None, 0) when ``centre`` and X
    is constant over the samples."""
    return scaled(as_float_matrix(x, name, min_rows=min_rows), centre=centre)


def as_square_kernel(k: object, name: str) -> np.ndarray:
    """``k`` as a float64 (N, N) matrix; ValueError naming ``name`` if it is not square 2-D."""
    arr = as_float_array(k, name)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) kernel matrix, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty, shape {arr.shape}")
    return arr


def _plain(y: object) -> np.ndarray:
    """numpy view of a numpy/torch/xarray/list value (no dtype change)."""
    if type(y).__module__.startswith("torch"):
        y = y.detach().cpu()
        return (y.double() if y.is_floating_point() else y).numpy()   # bfloat16 has no numpy dtype
    return np.asarray(getattr(y, "values", y))


def as_targets(y: object, n: int, name: str = "y", *, task: str | None = None) -> np.ndarray:
    """Probe targets (N,) or (N, O) of length ``n``, as numpy; with ``task="regression"`` as a finite
    float64 (N, O) matrix (a vector as one column, :func:`dynamics.task.regression_targets`).
    ValueError for another length or shape."""
    arr = _plain(y)
    if arr.ndim not in (1, 2) or arr.shape[0] != n:
        raise ValueError(f"{name} must hold {n} targets, shape ({n},) or ({n}, O), got shape {arr.shape}")
    if task == "regression":
        return regression_targets(arr)
    return arr


def as_labels(y: object, n: int, name: str = "y") -> np.ndarray:
    """Integer class labels (N,) as int64 (a column (N, 1) is read as (N,), as :mod:`dynamics.task`
    reads it; one-hot rows (N, C) give the column of their 1); ValueError if the length is not ``n``
    or a label is < 0, TypeError for non-integer values."""
    arr = _plain(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2 and arr.shape[0] == n and arr.size and np.all((arr == 0) | (arr == 1)) \
            and np.all(arr.sum(axis=1) == 1):
        return arr.argmax(axis=1).astype(np.int64)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be a label vector of length {n}, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} has a negative class label {int(arr.min())}")
    return arr.astype(np.int64, copy=False)


def nan_with_warning(message: str) -> float:
    """Warn (RuntimeWarning) that a quantity is undefined and return NaN — never a silent number."""
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    return float("nan")
