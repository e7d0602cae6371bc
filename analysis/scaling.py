"""Exact power-of-two rescaling for scale-invariant statistics — the one rule every feature statistic
follows (CKA, RBF CKA, effective ranks, linear probes, kernel and target alignments).

CKA and alignments are ratios of fourth-order (or second-order) sums: at features of size 1e±90 the
raw sums overflow to inf or underflow to 0 although the ratio is perfectly defined. Every such
statistic therefore first divides each matrix by 2^e, e = the binary exponent of its largest
absolute entry (after centring, where the statistic centres), so entries lie in [−1, 1) with the
largest in [0.5, 1). Multiplying by a power of two is exact in floating point (no rounding) except
for entries pushed below the smallest normal number, which are ≤ 2^-1022 relative to the largest
and negligible in every sum. Hence the rescaled statistic equals the unscaled one bit for bit
wherever the unscaled one does not overflow or underflow.

Feature matrices reach every statistic through :func:`analysis.arrays.feature_matrix`, which applies
:func:`scale_free` (centring first where the statistic centres); kernels through :func:`normalised`.
"""

from __future__ import annotations

import math

import numpy as np


def max_exponent(a: np.ndarray) -> int | None:
    """e with max|a| = m·2^e, m ∈ [0.5, 1) (numpy.frexp); None for an empty or all-zero array."""
    if a.size == 0:
        return None
    largest = float(np.max(np.abs(a)))
    if largest == 0.0:
        return None
    return int(np.frexp(largest)[1])


def normalised(a: np.ndarray) -> np.ndarray:
    """a · 2^−e with e = :func:`max_exponent` (a new float64 array; all-zero input returned as is)."""
    exponent = max_exponent(a)
    return a if exponent is None else np.ldexp(a, -exponent)


class ScaledSum:
    """Σ v_b · 2^(e_b) kept as total · 2^exponent, so terms of any magnitude add without overflow."""

    def __init__(self) -> None:
        self.total, self.exponent = 0.0, 0

    def add(self, value: float, exponent: int) -> None:
        if value == 0.0:
            return
        if self.total == 0.0 or exponent > self.exponent:
            self.total, self.exponent = math.ldexp(self.total, self.exponent - exponent) + value, exponent
        else:
            self.total += math.ldexp(value, exponent - self.exponent)


CONSTANT_ENERGY = 1e-24   # centred energy ≤ this × raw energy ⇒ constant over the samples (round-off)


def scale_free(a: np.ndarray, *, centre: bool = False) -> np.ndarray | None:
    """A (N, D) divided by the power of two of its largest entry — after column-centring when ``centre``
    (see :func:`scaled`); None when ``centre`` and A is constant over the samples."""
    return scaled(a, centre=centre)[0]


def scaled(a: np.ndarray, *, centre: bool = False) -> tuple[np.ndarray | None, int]:
    """(A·2^−e, e), e the binary exponent of A's largest entry — of the column-centred A when ``centre``
    (the raw matrix is rescaled first, so its mean cannot overflow, then the centred one again; e is
    the sum of both exponents). With ``centre``, (None, 0) when A is constant over the samples up to
    round-off (centred energy ≤ :data:`CONSTANT_ENERGY` × raw energy): nothing is left to measure."""
    first = max_exponent(a) or 0
    raw = np.ldexp(a, -first) if first else a
    if not centre:
        return raw, first
    centred = raw - raw.mean(axis=0)
    if not float(np.einsum("ij,ij->", centred, centred)) > CONSTANT_ENERGY * float(np.einsum("ij,ij->", raw, raw)):
        return None, 0
    second = max_exponent(centred) or 0
    return np.ldexp(centred, -second), first + second
