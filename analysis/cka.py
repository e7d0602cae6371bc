"""Centred kernel alignment (CKA) between two representations of the same N inputs.

Linear CKA (Kornblith et al. 2019, eq. 4), X (N, D1) and Y (N, D2) column-centred:
    CKA(X, Y) = ‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F)  =  tr(K H L H) / √(tr(K H K H) tr(L H L H)),  K = XXᵀ, L = YYᵀ.
It is computed in feature space (D×D products); an N×N Gram matrix is formed only when it is the
cheaper route (N(D1+D2) < D1·D2, i.e. never when N > D).
``debiased=True`` replaces the biased HSIC by the unbiased estimator HSIC_1 of Song et al. (2012)
(see :mod:`analysis.hsic`); it needs N ≥ 4 and can be negative for unrelated representations.

RBF CKA uses K_ij = exp(−‖x_i − x_j‖² / (2 (σ·m)²)) where m is the median Euclidean distance over
pairs i < j and σ the bandwidth *as a fraction of that median* (``sigma=None`` means σ = 1).

Minibatch CKA (Nguyen, Raghu & Kornblith 2021, eq. 3) averages HSIC_1 over probe minibatches:
    CKA_mb = Σ_b HSIC_1(K_b, L_b) / √(Σ_b HSIC_1(K_b, K_b) · Σ_b HSIC_1(L_b, L_b)).

Scale: CKA is invariant to scaling X or Y, but its raw fourth-order sums are not representable at
features of 1e±90 (‖XᵀX‖_F² overflowed to inf, or underflowed to 0). Every variant therefore
column-centres each representation and divides it by the power of two of its largest entry
(exact, :mod:`analysis.scaling`) before any product: :func:`linear_cka` (biased and debiased),
the chunked :class:`~analysis.cka_chunked.LinearCKAAccumulator` (sums rescaled when a chunk brings
a larger entry), :func:`minibatch_cka` (each batch centred and scaled, the HSIC terms summed with
their powers of two) and :func:`rbf_cka` (centred before the squared distances, which removes the
cancellation of ‖a‖² + ‖b‖² − 2aᵀb on offset rows). Values at any scale equal the unscaled ones
up to round-off.

Degenerate input: a representation that is constant over the samples (zero after centring) or whose
unbiased self-HSIC is ≤ 0 makes CKA undefined — the functions return NaN with a ``RuntimeWarning``.
Fewer than 4 samples with ``debiased=True`` raise ``ValueError``. Results are Python floats.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.arrays import as_float_matrix, nan_with_warning
from analysis.cka_chunked import LinearCKAAccumulator, is_lazy, iter_row_chunks, row_count
from analysis.hsic import MIN_SAMPLES_UNBIASED, double_centre, linear_pair_terms, unbiased_hsic_kernels
from analysis.scaling import ScaledSum, max_exponent, scale_free


def linear_cka(x: object, y: object, *, debiased: bool = False, chunk_size: int | None = None) -> float:
    """Linear CKA between X (N, D1) and Y (N, D2) (Kornblith et al. 2019), a float in [0, 1].

    Args:
        x: representation (N, D1) of N inputs (numpy, torch, xarray or dask); extra trailing dims
            are flattened into features.
        y: representation (N, D2) of the same N inputs, likewise.
        debiased: use the unbiased HSIC estimator (Song et al. 2012); needs N ≥ 4.
        chunk_size: process the probe set in chunks of this many rows, accumulating XᵀX, YᵀY, YᵀX
            (for arrays larger than memory; same value as in memory up to round-off). Dask-backed
            inputs are always processed chunk by chunk, by default along their own row chunks.
    """
    _check_bool("debiased", debiased)
    if chunk_size is not None or is_lazy(x) or is_lazy(y):
        accumulator = LinearCKAAccumulator()
        for x_chunk, y_chunk in iter_row_chunks(x, y, chunk_size):
            accumulator.update(x_chunk, y_chunk)
        return accumulator.cka(debiased=debiased)
    a, b = _paired_features(x, y, MIN_SAMPLES_UNBIASED if debiased else 2, centre=True)
    for name, centred in (("X", a), ("Y", b)):
        if centred is None:
            return nan_with_warning(f"linear CKA is undefined: {name} is constant over the samples")
    pair_xy, pair_xx, pair_yy = linear_pair_terms(a, b), linear_pair_terms(a, a), linear_pair_terms(b, b)
    if debiased:
        return cka_from_hsic(pair_xy.unbiased_hsic(), pair_xx.unbiased_hsic(), pair_yy.unbiased_hsic())
    return cka_from_hsic(pair_xy.frobenius, pair_xx.frobenius, pair_yy.frobenius)


def rbf_cka(x: object, y: object, *, sigma: float | None = None, debiased: bool = False) -> float:
    """CKA with Gaussian kernels of bandwidth ``sigma`` × (median pairwise distance), per representation.

    Builds the N×N kernels (memory and time O(N²·D)); use :func:`linear_cka` for large probe sets.
    NaN with a RuntimeWarning if a representation has all its samples equal (median distance 0).
    """
    _check_bool("debiased", debiased)
    if sigma is None:
        sigma = 1.0
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.floating)) or not (0 < sigma < math.inf):
        raise ValueError(f"sigma (bandwidth as a fraction of the median distance) must be a positive number, got {sigma!r}")
    a, b = _paired_features(x, y, MIN_SAMPLES_UNBIASED if debiased else 2, centre=True)
    k, l = (None if m is None else rbf_kernel(m, float(sigma)) for m in (a, b))
    if k is None or l is None:
        which = "X" if k is None else "Y"
        return nan_with_warning(f"RBF CKA is undefined: all samples of {which} are equal (median distance 0)")
    if debiased:
        return cka_from_hsic(unbiased_hsic_kernels(k, l), unbiased_hsic_kernels(k, k), unbiased_hsic_kernels(l, l))
    kc, lc = double_centre(k), double_centre(l)  # centre each kernel once for all three products
    return cka_from_hsic(float(np.sum(kc * lc)), float(np.sum(kc * kc)), float(np.sum(lc * lc)))


def centred_normalised(a: np.ndarray) -> np.ndarray | None:
    """Column-centred A (N, D) divided by the power of two of its largest entry; None when A is
    constant over the samples (:func:`analysis.scaling.scale_free`, the rule every feature statistic follows)."""
    return scale_free(a, centre=True)


def rbf_kernel(a: np.ndarray, sigma: float) -> np.ndarray | None:
    """exp(−‖a_i − a_j‖² / (2 (σ m)²)), m = median distance over i < j; None when m = 0. (N, D) → (N, N).

    The kernel does not change when A is shifted or scaled (m scales with A), so A is first
    column-centred and divided by the power of two of its largest entry: the squared distances
    ‖a_i‖² + ‖a_j‖² − 2 a_iᵀa_j are then formed without the cancellation an offset causes (an offset
    of 1e4 cost ≈ 1e-10 of accuracy) and without overflow or underflow at any scale.
    """
    a = scale_free(a, centre=True)
    if a is None:   # all rows equal
        return None
    norms = np.einsum("ij,ij->i", a, a)
    squared = np.maximum(norms[:, None] + norms[None, :] - 2.0 * (a @ a.T), 0.0)
    np.fill_diagonal(squared, 0.0)
    median = float(np.median(np.sqrt(squared[np.triu_indices(a.shape[0], k=1)])))
    if median == 0.0:
        return None
    return np.exp(-squared / (2.0 * (sigma * median) ** 2))


def minibatch_cka(x: object, y: object, *, batch_size: int) -> float:
    """Minibatch CKA (Nguyen et al. 2021): unbiased HSIC averaged over consecutive probe minibatches.

    Only one minibatch of X and Y is in memory at a time, so X and Y may be dask arrays or any
    sliceable array larger than memory. Batches hold ``batch_size`` rows (≥ 4); a last remainder of
    fewer than 4 rows joins the previous batch. The value estimates the CKA of the population and
    differs from the full-batch ``linear_cka(x, y, debiased=True)``; it converges to it as batches grow.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < MIN_SAMPLES_UNBIASED:
        raise ValueError(f"batch_size must be an int >= 4 (unbiased HSIC needs 4 samples), got {batch_size!r}")
    n, n_y = row_count(x, "X"), row_count(y, "Y")
    if n_y != n:
        raise ValueError(f"X and Y must have the same number of samples, got {n} and {n_y}")
    if n < MIN_SAMPLES_UNBIASED:
        raise ValueError(f"minibatch CKA needs at least 4 samples, got N={n}")
    starts = list(range(0, n, int(batch_size)))
    if n - starts[-1] < MIN_SAMPLES_UNBIASED and len(starts) > 1:
        starts.pop()
    bounds = zip(starts, starts[1:] + [n])
    totals = {"xy": ScaledSum(), "xx": ScaledSum(), "yy": ScaledSum()}
    for start, stop in bounds:
        # HSIC_1 is unchanged by shifting the rows, so each batch is centred by its own mean and
        # divided by 2^e (e from its largest entry); a term of the pair (a, b) then carries 2^(2ea+2eb).
        a, ea = _batch_scaled(as_float_matrix(x[start:stop], "X"))
        b, eb = _batch_scaled(as_float_matrix(y[start:stop], "Y"))
        totals["xy"].add(linear_pair_terms(a, b).unbiased_hsic(), 2 * ea + 2 * eb)
        totals["xx"].add(linear_pair_terms(a, a).unbiased_hsic(), 4 * ea)
        totals["yy"].add(linear_pair_terms(b, b).unbiased_hsic(), 4 * eb)
    xy, xx, yy = totals["xy"], totals["xx"], totals["yy"]
    shift = xy.exponent - (xx.exponent + yy.exponent) / 2   # CKA = xy·2^shift / √(xx·yy) in mantissas
    return cka_from_hsic(xy.total * 2.0 ** shift if xy.total else 0.0, xx.total, yy.total)


def _batch_scaled(a: np.ndarray) -> tuple[np.ndarray, int]:
    """(A − mean) / 2^e and e, e the binary exponent of its largest entry (0 for a constant batch)."""
    raw_exponent = max_exponent(a) or 0
    a = a - np.ldexp(np.ldexp(a, -raw_exponent).mean(axis=0), raw_exponent)   # the mean without overflow
    exponent = max_exponent(a) or 0
    return np.ldexp(a, -exponent), exponent


def cka_from_hsic(hsic_xy: float, hsic_xx: float, hsic_yy: float) -> float:
    """HSIC(X, Y) / √(HSIC(X, X) HSIC(Y, Y)); NaN with a RuntimeWarning if a self-HSIC is ≤ 0."""
    if not hsic_xx > 0.0 or not hsic_yy > 0.0:
        which = "X" if not hsic_xx > 0.0 else "Y"
        return nan_with_warning(
            f"CKA is undefined: the self-similarity HSIC({which}, {which}) = "
            f"{hsic_xx if which == 'X' else hsic_yy:.3g} is not positive (constant features or too few samples)")
    return float(hsic_xy / math.sqrt(hsic_xx * hsic_yy))


def _paired_features(x: object, y: object, min_rows: int, *, centre: bool) -> tuple[np.ndarray | None, ...]:
    """X and Y as float64 matrices of the same N, then centred and scaled by the feature rule
    (:func:`analysis.arrays.feature_matrix`, :func:`analysis.scaling.scale_free`; None when constant)."""
    a, b = as_float_matrix(x, "X", min_rows=min_rows), as_float_matrix(y, "Y", min_rows=min_rows)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"X and Y must have the same number of samples, got {a.shape[0]} and {b.shape[0]}")
    return scale_free(a, centre=centre), scale_free(b, centre=centre)


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
