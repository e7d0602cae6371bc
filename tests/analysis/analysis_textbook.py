"""Textbook (dense, explicit-matrix) references the analysis functions are tested against.

Written from the formulas directly, with explicit n×n centring matrices and no shared code with
the package, so that a mistake in the package cannot hide in the reference as well.
"""

import numpy as np


def centering_matrix(n):
    """H = I − 11ᵀ/n."""
    return np.eye(n) - np.ones((n, n)) / n


def hsic_biased(k, l):
    """tr(K H L H) / (n − 1)² (Gretton et al. 2005)."""
    h = centering_matrix(k.shape[0])
    return np.trace(k @ h @ l @ h) / (k.shape[0] - 1) ** 2


def hsic_unbiased(k, l):
    """Song et al. 2012, eq. 5, with K̃, L̃ the kernels with zeroed diagonals."""
    n = k.shape[0]
    kt = k.copy()
    lt = l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ kt @ lt @ one)) / (n * (n - 3))


def cka_from_kernels(k, l, hsic=hsic_biased):
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def linear_cka_textbook(x, y, debiased=False):
    """CKA with linear kernels K = XXᵀ, L = YYᵀ (uncentred; H does the centring)."""
    return cka_from_kernels(x @ x.T, y @ y.T, hsic_unbiased if debiased else hsic_biased)


def rbf_kernel_textbook(x, fraction):
    """exp(−d²/(2(fraction·median)²)), median over pairs i < j, by explicit loops."""
    n = x.shape[0]
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            dist[i, j] = np.sqrt(np.sum((x[i] - x[j]) ** 2))
    median = np.median([dist[i, j] for i in range(n) for j in range(i + 1, n)])
    return np.exp(-dist ** 2 / (2.0 * (fraction * median) ** 2))


def random_orthogonal(d, rng):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def centred_orthonormal_columns(n, k, rng):
    """n×k matrix with orthonormal columns, each orthogonal to the all-ones vector."""
    a = rng.normal(size=(n, k))
    a = a - a.mean(axis=0)
    q, _ = np.linalg.qr(a)
    return q
