"""Effective rank of a data matrix (singular values) or of a kernel matrix (eigenvalues).

With a spectrum s_1 ≥ s_2 ≥ … ≥ 0 (DESIGN §3 "Analysis"):
    entropy         exp(−Σ p_i log p_i),  p_i = s_i / Σ s          (Roy & Vetterli 2007)
    participation   (Σ s²)² / Σ s⁴                                  (participation ratio)
    stable          Σ s² / s_max²                                   (Rudelson & Vershynin 2007)
    numerical       #{s_i > tol}, tol = max(N, D) · eps · s_max by default (numpy.linalg.matrix_rank)
For ``matrix="data"`` X (N, D) is column-centred first and s are its singular values σ. For
``matrix="kernel"`` K (N, N) must be symmetric positive semi-definite and s are its eigenvalues λ
(the singular values of K itself; note λ = σ² when K = X Xᵀ, so the two views of the same data give
different numbers). Eigenvalues below zero by round-off (≥ −1e-2·λ_max) are set to zero; a clearly
indefinite or asymmetric "kernel" raises ValueError. eps is that of the input's own dtype.
Every kind but the numerical rank with an explicit ``tol`` is scale-invariant: the spectrum is taken
of X (centred) or K divided by the power of two of its largest entry (exact, :mod:`analysis.scaling`),
so matrices of 1e±300 give the rank of the unscaled ones; an explicit ``tol`` is rescaled with them.

Degenerate input: an all-zero spectrum (a zero kernel, or constant data) has no distribution to take
an entropy of — every kind but "numerical" (which returns 0.0) gives NaN with a RuntimeWarning.
"""

from __future__ import annotations

import numpy as np

from analysis.arrays import as_square_kernel, feature_matrix, native_eps, nan_with_warning
from analysis.scaling import max_exponent

KINDS = ("entropy", "participation", "stable", "numerical")
MATRICES = ("data", "kernel")


def effective_rank(x: object, *, kind: str = "entropy", matrix: str = "data", tol: float | None = None) -> float:
    """Effective rank of X (N, D) (``matrix="data"``) or of a PSD kernel K (N, N) (``matrix="kernel"``).

    ``kind`` is one of "entropy", "participation", "stable", "numerical"; ``tol`` is the absolute
    threshold of the numerical rank (default max(N, D)·eps·s_max). Returns a float.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if matrix not in MATRICES:
        raise ValueError(f"matrix must be one of {MATRICES}, got {matrix!r}")
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not tol >= 0):
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    eps = native_eps(x)
    spectrum, exponent = scaled_kernel_spectrum(x, eps) if matrix == "kernel" else scaled_data_spectrum(x)
    size = max(np.shape(x)[0], np.prod(np.shape(x)[1:], dtype=int)) if np.ndim(x) > 1 else np.shape(x)[0]
    if tol is not None:   # an absolute threshold on the unscaled spectrum
        tol = float(np.ldexp(float(tol), -exponent))
    return rank_of_spectrum(spectrum, kind, tol=tol, eps=eps, size=int(size))


def scaled_data_spectrum(x: object) -> tuple[np.ndarray, int]:
    """(σ·2^−e, e): singular values of the column-centred X (N, D), descending, computed on the
    centred X divided by 2^e, the power of two of its largest entry (:func:`analysis.arrays.feature_matrix`),
    so that no scale of X overflows or underflows. All zeros (e = 0) for constant X."""
    centred, exponent = feature_matrix(x, "X", centre=True)
    if centred is None:
        shape = np.shape(x)
        return np.zeros(min(shape[0], int(np.prod(shape[1:], dtype=int)) if len(shape) > 1 else 1)), 0
    return np.linalg.svd(centred, compute_uv=False), exponent


def data_spectrum(x: object) -> np.ndarray:
    """Singular values of the column-centred X (N, D), descending, float64 (in X's units)."""
    spectrum, exponent = scaled_data_spectrum(x)
    return np.ldexp(spectrum, exponent)


def scaled_kernel_spectrum(k: object, eps: float = float(np.finfo(np.float64).eps)) -> tuple[np.ndarray, int]:
    """(λ·2^−e, e): eigenvalues of a symmetric PSD kernel (N, N) divided by 2^e, the power of two of
    its largest entry, descending, with round-off negatives set to 0."""
    arr = as_square_kernel(k, "K")
    exponent = max_exponent(arr) or 0
    arr = np.ldexp(arr, -exponent)
    scale = float(np.abs(arr).max())
    asymmetry = float(np.abs(arr - arr.T).max())
    if asymmetry > max(np.sqrt(eps), 1e-6) * scale:
        raise ValueError(f"K is not symmetric: max |K - Kᵀ| = {asymmetry:.3g} (max |K| = {scale:.3g}, after "
                         f"dividing by 2^{exponent})")
    values = np.linalg.eigvalsh((arr + arr.T) / 2.0)[::-1]
    if values.size and values[-1] < -1e-2 * max(values[0], 0.0) - 1e-300:
        raise ValueError(f"K is not positive semi-definite: eigenvalue {values[-1]:.3g} vs largest {values[0]:.3g}")
    return np.maximum(values, 0.0), exponent


def kernel_spectrum(k: object, eps: float = float(np.finfo(np.float64).eps)) -> np.ndarray:
    """Eigenvalues of a symmetric PSD kernel (N, N), descending, with round-off negatives set to 0."""
    values, exponent = scaled_kernel_spectrum(k, eps)
    return np.ldexp(values, exponent)


def rank_of_spectrum(spectrum: object, kind: str = "entropy", *, tol: float | None = None,
                     eps: float = float(np.finfo(np.float64).eps), size: int | None = None) -> float:
    """The effective rank ``kind`` of a non-negative spectrum s (1-D); see the module docstring."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    s = np.sort(np.asarray(spectrum, dtype=np.float64).ravel())[::-1]
    if s.size == 0:
        raise ValueError("the spectrum is empty")
    if s[-1] < 0:
        raise ValueError(f"a spectrum must be non-negative, got the value {s[-1]:.3g}")
    top = float(s[0])
    if kind == "numerical":
        threshold = tol if tol is not None else (size or s.size) * eps * top
        return float(np.count_nonzero(s > threshold))
    if top == 0.0:
        return nan_with_warning(f"the {kind} effective rank is undefined for an all-zero spectrum (zero matrix)")
    s = s / top  # scale-free; avoids overflow in Σ s⁴
    if kind == "entropy":
        p = s[s > 0] / s.sum()
        return float(np.exp(-np.sum(p * np.log(p))))
    if kind == "participation":
        squares = s ** 2
        return float(squares.sum() ** 2 / np.sum(squares ** 2))
    return float(np.sum(s ** 2))  # stable rank: Σ s² / s_max², s_max = 1 after scaling
