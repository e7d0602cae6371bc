"""How far parameters moved from their initial values.

    relative change   ‖θ_t − θ_0‖ / ‖θ_0‖
    cosine to init    ⟨θ_t, θ_0⟩ / (‖θ_t‖ ‖θ_0‖)
over all entries of one parameter tensor (flattened). Over a group of tensors S (a layer, all weights,
all biases) the change is norm-weighted, as if S were one vector (:func:`grouped_relative_change`):

    ‖θ_t − θ_0‖_S / ‖θ_0‖_S = sqrt(Σ_{i∈S} ‖θ_{i,t} − θ_{i,0}‖²) / sqrt(Σ_{i∈S} ‖θ_{i,0}‖²)

so a tiny bias cannot dominate it the way it dominates a plain mean of per-tensor ratios. A zero initial tensor (e.g. a bias initialised
to 0) makes the relative change undefined and a zero tensor makes the cosine undefined: NaN with a
RuntimeWarning. ``weight_change_table`` vectorises both over the checkpoints of an in-memory history
(the run analysis reads stored histories lazily instead: :func:`analysis.checkpoint_metrics.weight_metrics`).
"""

from __future__ import annotations

import warnings

import numpy as np

from analysis.arrays import as_float_array, nan_with_warning


def relative_change(theta: object, theta0: object) -> float:
    """‖θ − θ_0‖ / ‖θ_0‖ for two arrays of the same shape (NaN + warning if θ_0 = 0)."""
    a, b = _pair(theta, theta0)
    norm0 = float(np.linalg.norm(b))
    if norm0 == 0.0:
        return nan_with_warning("relative weight change is undefined: the initial parameter is all zeros")
    return float(np.linalg.norm(a - b) / norm0)


def cosine_to_init(theta: object, theta0: object) -> float:
    """⟨θ, θ_0⟩ / (‖θ‖ ‖θ_0‖) for two arrays of the same shape (NaN + warning if either is 0)."""
    a, b = _pair(theta, theta0)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return nan_with_warning("cosine to init is undefined: a parameter tensor is all zeros")
    return float(np.dot(a, b) / (na * nb))


def weight_change_table(history: object) -> tuple[np.ndarray, np.ndarray]:
    """Relative change and cosine of every checkpoint of one parameter vs checkpoint 0.

    ``history`` has shape (C, ...) (checkpoints first). Returns two float64 arrays of shape (C,);
    entries are NaN (one RuntimeWarning per call) where they are undefined.
    """
    arr = as_float_array(history, "parameter history")
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(f"parameter history needs a leading checkpoint dimension, got shape {arr.shape}")
    flat = arr.reshape(arr.shape[0], -1)
    init = flat[0]
    norm0 = np.linalg.norm(init)
    norms = np.linalg.norm(flat, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(norm0 > 0, np.linalg.norm(flat - init, axis=1) / norm0, np.nan)
        cos = np.where((norms > 0) & (norm0 > 0), flat @ init / (norms * norm0), np.nan)
    if norm0 == 0 or np.any(norms == 0):
        warnings.warn("weight change is undefined where a parameter tensor is all zeros (NaN there)",
                      RuntimeWarning, stacklevel=2)
    return rel, cos


def grouped_relative_change(delta_norm: object, init_norm: object) -> np.ndarray:
    """Norm-weighted relative change of a group of tensors (module docstring formula).

    ``delta_norm`` holds ‖θ_{i,t} − θ_{i,0}‖ with the tensors i along the last axis (e.g. shape (C, P)),
    ``init_norm`` holds ‖θ_{i,0}‖ (shape (P,)); NaN entries (tensors a run does not have) are left out.
    Returns shape ``delta_norm.shape[:-1]``; NaN where the group's initial norm is 0 or it has no tensor.
    Norms are scaled by their largest value before squaring, so huge or tiny norms do not overflow.
    """
    delta = np.asarray(delta_norm, dtype=np.float64)
    init = np.broadcast_to(np.asarray(init_norm, dtype=np.float64), delta.shape)
    present = np.isfinite(delta) & np.isfinite(init)
    delta, init = np.where(present, delta, 0.0), np.where(present, init, 0.0)
    top = np.maximum(delta.max(axis=-1, initial=0.0), init.max(axis=-1, initial=0.0))[..., None]
    top = np.where(top > 0, top, 1.0)
    num = np.sqrt(((delta / top) ** 2).sum(axis=-1))
    den = np.sqrt(((init / top) ** 2).sum(axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _pair(theta: object, theta0: object) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_float_array(theta, "theta"), as_float_array(theta0, "theta0")
    if a.shape != b.shape:
        raise ValueError(f"theta and theta0 must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("theta is empty")
    return a.ravel(), b.ravel()
