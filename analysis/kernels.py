"""Kernel alignment, kernel distance and kernel–target alignment.

Formulas (DESIGN §3 "Analysis"):
    A(K1, K2) = ⟨K1, K2⟩_F / (‖K1‖_F ‖K2‖_F)                      (Cristianini et al. 2002)
    centred:   the same on H K1 H and H K2 H, H = I − 11ᵀ/N          (Cortes, Mohri & Rostamizadeh 2012)
    distance   d(K1, K2) = 1 − A(K1, K2)
    target     A(K, Y Yᵀ): Y (N, C) the one-hot encoding of class labels (classification), or the
               targets themselves, y (N,) or Y (N, O) (regression; :mod:`dynamics.task`).

Every alignment is invariant to scaling either kernel, and is computed after dividing each kernel
(after centring, when asked) by the power of two of its largest entry (:mod:`analysis.scaling`):
kernels of any magnitude give the value of the unscaled ones, never an overflow to 0 or NaN.
Inputs are numpy arrays or torch tensors; results are Python floats. A kernel whose Frobenius norm is
zero (after centring, when asked) has no direction, so its alignment is undefined: the functions
return NaN and emit a ``RuntimeWarning`` rather than a made-up number.
"""

from __future__ import annotations

import numpy as np

from analysis.arrays import as_float_array, as_labels, as_square_kernel, as_targets, nan_with_warning
from analysis.hsic import double_centre
from analysis.scaling import normalised
from dynamics.task import check_task, infer_task


def center_kernel(k: object) -> np.ndarray:
    """H K H with H = I − 11ᵀ/N, computed as K − row means − column means + grand mean.

    Shapes: (N, N) → (N, N) float64. Reference: Cortes et al. 2012, Lemma 1.
    """
    return double_centre(as_square_kernel(k, "K"))


def alignment(k1: object, k2: object, *, centered: bool = False) -> float:
    """Kernel alignment A(K1, K2) = ⟨K1, K2⟩_F / (‖K1‖_F ‖K2‖_F) ∈ [−1, 1].

    Args:
        k1: a kernel, (N, N), or (N, N, O, O) output-resolved NTKs (the Frobenius products then run
            over every axis). ``centered=True`` needs (N, N).
        k2: a kernel of the same shape as ``k1``.
        centered: align H K1 H and H K2 H instead (Cortes et al. 2012), which removes the effect of
            a constant offset in the features.

    Returns NaN with a RuntimeWarning when either kernel has zero norm.
    """
    if not isinstance(centered, bool):
        raise TypeError(f"centered must be a bool, got {centered!r}")
    if centered:
        a, b = as_square_kernel(k1, "K"), as_square_kernel(k2, "K2")
        if a.shape != b.shape:
            raise ValueError(f"K1 and K2 must have the same shape, got {a.shape} and {b.shape}")
        a, b = double_centre(normalised(a)), double_centre(normalised(b))
    else:
        a, b = as_float_array(k1, "K1"), as_float_array(k2, "K2")
        if a.shape != b.shape:
            raise ValueError(f"K1 and K2 must have the same shape, got {a.shape} and {b.shape}")
        if a.size == 0:
            raise ValueError(f"kernels are empty, shape {a.shape}")
    return _cosine(a.ravel(), b.ravel(), "kernel alignment")


def kernel_distance(k1: object, k2: object, *, centered: bool = False) -> float:
    """d(K1, K2) = 1 − A(K1, K2) ∈ [0, 2]; 0 when the kernels are proportional (see :func:`alignment`)."""
    return 1.0 - alignment(k1, k2, centered=centered)


def target_alignment(k: object, y: object, *, task: str | None = None, n_classes: int | None = None,
                     centered: bool = False) -> float:
    """Kernel–target alignment A(K, Y Yᵀ) = ⟨K, YYᵀ⟩_F / (‖K‖_F ‖YYᵀ‖_F) of a kernel K (N, N).

    Y depends on the task (:mod:`dynamics.task`):
        classification  Y (N, C) the one-hot encoding of the class labels ``y`` (N,) (or one-hot rows);
        regression      Y = the targets themselves: y (N,) as one column (A(K, yyᵀ)), or Y (N, O).
    ``task=None`` infers it from ``y`` alone (:func:`dynamics.task.infer_task`: floating-point or
    negative targets are regression, non-negative integer labels classification); state it when the
    targets could be read either way (float-typed class labels, integer-valued regression targets).

    Computed without the N×N target kernel: ⟨K, YYᵀ⟩_F = tr(YᵀKY) and ‖YYᵀ‖_F = ‖YᵀY‖_F (for one-hot
    Y, (Σ_c n_c²)^½). K and Y are divided by the powers of two of their largest entries first (exact;
    A does not change), so neither overflows. ``n_classes`` (classification only) fixes C (labels must
    be < C; classes without samples contribute nothing). ``centered=True`` aligns HKH with H YYᵀ H.
    Returns NaN with a RuntimeWarning when K or YYᵀ has zero norm (e.g. centred, all labels equal).
    Reference: Cristianini et al. 2002 (classification); the same ratio with YYᵀ for real targets.
    """
    k = normalised(as_square_kernel(k, "K"))  # A is scale-invariant; 2^e scaling is exact (analysis.scaling)
    task = infer_task(as_targets(y, k.shape[0]))[0] if task is None else check_task(task)
    if task == "regression":
        if n_classes is not None:
            raise ValueError(f"n_classes applies to classification targets, got n_classes={n_classes!r} with "
                             "task='regression'")
        targets = normalised(as_targets(y, k.shape[0], task="regression"))
    else:
        targets = _one_hot(as_labels(y, k.shape[0]), n_classes)
    if centered:
        k = normalised(center_kernel(k))
        targets = targets - targets.mean(axis=0, keepdims=True)
    # ⟨K, YYᵀ⟩ = tr(Yᵀ K Y); ‖YYᵀ‖_F² = ‖YᵀY‖_F² (Y has C or O ≤ N columns, so this stays small).
    inner = float(np.sum((k @ targets) * targets))
    target_norm = float(np.linalg.norm(targets.T @ targets))
    k_norm = float(np.linalg.norm(k))
    if k_norm == 0.0 or target_norm == 0.0:
        which = "K" if k_norm == 0.0 else "the (centred) label kernel YYᵀ (target kernel)"
        return nan_with_warning(f"kernel-target alignment is undefined: {which} has zero Frobenius norm")
    return inner / (k_norm * target_norm)


def _one_hot(labels: np.ndarray, n_classes: int | None) -> np.ndarray:
    """One-hot Y (N, C) of integer labels, C = ``n_classes`` or the largest label + 1."""
    n_c = int(labels.max()) + 1 if labels.size else 0
    if n_classes is not None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
        if n_c > n_classes:
            raise ValueError(f"label {n_c - 1} is out of range for n_classes={n_classes}")
        n_c = int(n_classes)
    onehot = np.zeros((labels.size, n_c))
    onehot[np.arange(labels.size), labels] = 1.0
    return onehot


def _cosine(a: np.ndarray, b: np.ndarray, what: str) -> float:
    """⟨a, b⟩ / (‖a‖ ‖b‖) for flat float64 vectors; NaN + warning if a norm is zero.

    a and b are first divided by the powers of two of their largest entries (exact), so neither the
    norms nor the product overflow or underflow (a kernel of 1e±200 aligns as the unscaled one).
    """
    a, b = normalised(a), normalised(b)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        which = "K1" if na == 0.0 else "K2"
        return nan_with_warning(f"{what} is undefined: {which} has zero Frobenius norm")
    return float(np.dot(a, b) / (na * nb))
