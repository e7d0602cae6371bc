"""The spectrum of the probe-set NTK over training: eigenvalues, condition number, label alignment.

For a (N, N) kernel Θ = U diag(λ) Uᵀ, λ₁ ≥ λ₂ ≥ … ≥ λ_N, and targets Y (N, C) (the one-hot encoding
of integer labels, or float targets as given):

- eigenvalues λ_i, descending (``numpy.linalg.eigh`` of (Θ + Θᵀ)/2);
- condition number κ = λ₁ / λ_N of the uncentred kernel, +inf when λ_N ≤ N·eps·λ₁ (numerically
  singular). κ bounds the GN solve: the kernel form of a GN step solves with this matrix (DESIGN §3);
- cumulative label alignment a_k = Σ_{i≤k} Σ_c (u_iᵀ y_c)² / ‖Y‖²_F, k = 1 … N: the fraction of the
  targets' energy that lies in the kernel's top-k eigen-directions (a_N = 1). Gradient flow on the
  linearised model fits the component of Y along u_i at rate λ_i, so a kernel whose top directions
  carry the labels learns them fast (Kopitkov & Indelman 2020, "Neural spectrum alignment";
  Baratin et al. 2021, "Implicit regularization via neural feature alignment"; with one target
  vector this is Σ_{i≤k}(u_iᵀy)²/‖y‖²).

``centered=True`` (the analysis' ``centered_alignment``) takes λ and U of HΘH and uses HY,
H = I − 11ᵀ/N, so the constant direction (the class frequencies) does not count as alignment; κ is
always of the uncentred Θ (HΘH is singular).
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from analysis.arrays import as_float_array, as_labels, as_square_kernel
from analysis.hsic import double_centre
from analysis.scaling import max_exponent

MODE_DIM = "ntk_mode"


def target_matrix(y: object, n: int) -> np.ndarray:
    """Y (N, C): the one-hot encoding of integer labels (N,) (C = largest label + 1), or float targets
    (N, O) as float64."""
    arr = np.asarray(y.detach().cpu().numpy() if type(y).__module__.startswith("torch") else y)
    if arr.ndim == 2:
        out = as_float_array(arr, "y")
        if out.shape[0] != n:
            raise ValueError(f"y must have {n} rows, got shape {out.shape}")
        return out
    labels = as_labels(arr, n)
    onehot = np.zeros((n, int(labels.max()) + 1 if n else 0))
    onehot[np.arange(n), labels] = 1.0
    return onehot


def condition_number(values: np.ndarray) -> float:
    """κ = λ₁ / λ_N of descending eigenvalues; +inf when λ_N ≤ N·eps·λ₁, NaN when λ₁ ≤ 0."""
    top, bottom = float(values[0]), float(values[-1])
    if not top > 0:
        return np.nan
    return top / bottom if bottom > values.size * np.finfo(np.float64).eps * top else np.inf


def spectrum(kernel: object, y: object, *, centered: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """(λ descending (N,), cumulative label alignment (N,), condition number κ) of the module docstring.

    ``kernel`` (N, N) traced NTK (numpy array or torch tensor, finite); ``y`` integer labels (N,) or
    float targets (N, O). With ``centered`` λ and the alignment are of HΘH and HY, κ of Θ. The
    alignment is NaN (with a RuntimeWarning) when ‖Y‖_F = 0 (centred: all labels equal); κ is +inf
    for a numerically singular kernel and NaN for a zero one. The kernel is divided by the power of
    two of its largest entry before ``eigh`` (exact) and the eigenvalues multiplied back.
    """
    if not isinstance(centered, bool):
        raise TypeError(f"centered must be a bool, got {centered!r}")
    k = as_square_kernel(kernel, "K")   # ValueError for NaN/inf entries
    n = k.shape[0]
    targets = target_matrix(y, n)
    exponent = max_exponent(k) or 0
    k = np.ldexp(0.5 * (k + k.T), -exponent)
    if centered:
        condition = condition_number(np.linalg.eigvalsh(k)[::-1])
        k, targets = double_centre(k), targets - targets.mean(axis=0, keepdims=True)
    values, vectors = np.linalg.eigh(k)
    values, vectors = values[::-1], vectors[:, ::-1]
    if not centered:
        condition = condition_number(values)
    energy = float(np.sum(targets * targets))
    if energy == 0:
        warnings.warn("NTK label alignment is undefined: the (centred) targets are zero", RuntimeWarning, stacklevel=2)
        alignment = np.full(n, np.nan)
    else:
        alignment = np.minimum(np.cumsum(np.sum((vectors.T @ targets) ** 2, axis=1)) / energy, 1.0)
    return np.ldexp(values, exponent), alignment, condition


def ntk_spectrum(kernel: object, y: object, *, centered: bool = False) -> xr.Dataset:
    """:func:`spectrum` as a Dataset: ``eigenvalue`` and ``label_alignment`` along ``ntk_mode``
    (1 … N, descending eigenvalues) and the scalar ``condition_number``."""
    values, alignment, condition = spectrum(kernel, y, centered=centered)
    modes = np.arange(1, values.size + 1, dtype=np.int64)
    return xr.Dataset({"eigenvalue": (MODE_DIM, values), "label_alignment": (MODE_DIM, alignment),
                       "condition_number": condition}, coords={MODE_DIM: modes})


class SpectrumMetrics:
    """The analysis variables of the NTK spectrum over ``n`` checkpoints of a ``size``-sample probe,
    filled kernel by kernel (:meth:`add`), so that the analysis reads each stored kernel once for this
    and :func:`analysis.checkpoint_metrics.ntk_metrics` alike. Checkpoints never added (a kernel that
    is not finite) stay NaN."""

    def __init__(self, n: int, size: int, targets: np.ndarray, *, centered: bool = False) -> None:
        self.targets, self.centered = targets, centered
        self.values, self.alignment = np.full((n, size), np.nan), np.full((n, size), np.nan)
        self.condition = np.full(n, np.nan)

    def add(self, c: int, kernel: np.ndarray) -> None:
        """The spectrum of checkpoint ``c``'s finite kernel (N, N)."""
        self.values[c], self.alignment[c], self.condition[c] = spectrum(kernel, self.targets, centered=self.centered)

    def result(self) -> tuple[dict[str, tuple], np.ndarray]:
        """The variables ``ntk_eigenvalues`` and ``ntk_label_alignment`` (checkpoint, ntk_mode) and
        ``ntk_condition_number`` (checkpoint), and the ``ntk_mode`` coordinate (1 … N; empty without an NTK)."""
        modes = np.arange(1, self.values.shape[1] + 1, dtype=np.int64)
        return {"ntk_eigenvalues": (("checkpoint", MODE_DIM), self.values),
                "ntk_label_alignment": (("checkpoint", MODE_DIM), self.alignment),
                "ntk_condition_number": ("checkpoint", self.condition)}, modes
