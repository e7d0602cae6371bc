"""Hilbert–Schmidt independence criterion estimators shared by the CKA functions.

With kernels K, L (N×N) and K̃, L̃ the same with their diagonals set to zero:
    biased    HSIC_0(K, L) = tr(K H L H) / (N − 1)²,  H = I − 11ᵀ/N     (Gretton et al. 2005)
    unbiased  HSIC_1(K, L) = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((N−1)(N−2)) − 2/(N−2) · 1ᵀK̃L̃1] / (N(N−3))
                                                                          (Song et al. 2012, eq. 5)
For linear kernels K = AAᵀ, L = BBᵀ with rows a_i, b_i and column sums s_a = Aᵀ1, s_b = Bᵀ1 every
term is a feature-space quantity (no N×N matrix):
    tr(K̃L̃)   = ‖AᵀB‖_F² − Σ_i ‖a_i‖²‖b_i‖²
    1ᵀK̃1     = ‖s_a‖² − Σ_i ‖a_i‖²
    1ᵀK̃L̃1    = Σ_i (a_iᵀs_a − ‖a_i‖²)(b_iᵀs_b − ‖b_i‖²).
HSIC_1 is unchanged by adding a constant vector to every row of A or B, so any shift may be used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SAMPLES_UNBIASED = 4


@dataclass(frozen=True)
class LinearPairTerms:
    """The four sufficient statistics of HSIC_1 for the linear kernels of a pair (A, B) of N rows."""

    n: int
    frobenius: float      # ‖AᵀB‖_F² = ⟨AAᵀ, BBᵀ⟩_F
    diagonal: float       # Σ_i ‖a_i‖² ‖b_i‖²
    offdiag_sum_a: float  # 1ᵀK̃1 = ‖s_a‖² − Σ_i ‖a_i‖²
    offdiag_sum_b: float  # 1ᵀL̃1
    row_sums: float       # 1ᵀK̃L̃1 = (K̃1)ᵀ(L̃1)

    def unbiased_hsic(self) -> float:
        """HSIC_1 from these terms (Song et al. 2012); needs N ≥ 4 (ValueError otherwise)."""
        n = self.n
        if n < MIN_SAMPLES_UNBIASED:
            raise ValueError(f"the debiased (unbiased HSIC) estimator needs at least 4 samples, got N={n}")
        value = (self.frobenius - self.diagonal
                 + self.offdiag_sum_a * self.offdiag_sum_b / ((n - 1) * (n - 2))
                 - 2.0 * self.row_sums / (n - 2))
        return float(value / (n * (n - 3)))


def linear_pair_terms(a: np.ndarray, b: np.ndarray, *, gram: bool | None = None) -> LinearPairTerms:
    """:class:`LinearPairTerms` of float64 matrices A (N, D1), B (N, D2) held in memory.

    ``gram`` chooses how ‖AᵀB‖_F² is formed: as ⟨AAᵀ, BBᵀ⟩_F (cost N²(D1+D2)) or in feature space
    (cost N·D1·D2); ``None`` picks the cheaper one, so no N×N matrix is built when N > D1 + D2.
    """
    if gram is None:
        gram = a.shape[0] * (a.shape[1] + b.shape[1]) < a.shape[1] * b.shape[1]
    frobenius = float(np.sum((a @ a.T) * (b @ b.T))) if gram else float(np.sum((a.T @ b) ** 2))
    norms_a, norms_b = np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b)
    sum_a, sum_b = a.sum(axis=0), b.sum(axis=0)
    rows_a, rows_b = a @ sum_a - norms_a, b @ sum_b - norms_b
    return LinearPairTerms(
        n=a.shape[0], frobenius=frobenius, diagonal=float(norms_a @ norms_b),
        offdiag_sum_a=float(sum_a @ sum_a - norms_a.sum()), offdiag_sum_b=float(sum_b @ sum_b - norms_b.sum()),
        row_sums=float(rows_a @ rows_b),
    )


def unbiased_hsic_kernels(k: np.ndarray, l: np.ndarray) -> float:
    """HSIC_1(K, L) of two explicit (N, N) kernels (Song et al. 2012, eq. 5); needs N ≥ 4."""
    n = k.shape[0]
    if n < MIN_SAMPLES_UNBIASED:
        raise ValueError(f"the debiased (unbiased HSIC) estimator needs at least 4 samples, got N={n}")
    k_off, l_off = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    k_rows, l_rows = k_off.sum(axis=1), l_off.sum(axis=1)
    value = (np.sum(k_off * l_off) + k_rows.sum() * l_rows.sum() / ((n - 1) * (n - 2))
             - 2.0 * float(k_rows @ l_rows) / (n - 2))
    return float(value / (n * (n - 3)))


def double_centre(k: np.ndarray) -> np.ndarray:
    """H K H with H = I − 11ᵀ/N, as K − column means − row means + grand mean (no H formed). (N, N) → (N, N)."""
    return k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()


def centered_kernel_product(k: np.ndarray, l: np.ndarray) -> float:
    """tr(K H L H) = ⟨HKH, HLH⟩_F for symmetric (N, N) kernels, without forming H."""
    return float(np.sum(double_centre(k) * double_centre(l)))
