"""Minimum-norm solves for one coupling F(u) = W a(u) + b: find (δW, δb) with A [δW, δb]ᵀ = t.

A = [a, 1] (N × (H+1)) are the coupling's features with a ones column for the bias; t (N × half) is the
desired change of the coupling's output. All solvers return the Moore–Penrose (least-squares,
minimum-norm) solution δWᵀ_aug = A⁺ t and the change it *realises*, A A⁺ t (= t when A has full row
rank N).

Truncation (all solvers): a direction is kept when its eigenvalue λ of the Gram matrix A Aᵀ (= squared
singular value of A) satisfies λ > max(atol, rtol · λ_max). Default rtol = N · eps(dtype).

- :class:`GramSolver`: Cholesky of the N × N Gram A Aᵀ = a aᵀ + 1 1ᵀ, δW_augᵀ = Aᵀ (A Aᵀ)⁻¹ t. Full rank
  is accepted when Cholesky succeeds with every pivot L_ii² > max(atol, rtol · ‖AAᵀ‖_F) (pivots bound
  λ_min from above, so this is a cheap necessary test); otherwise eigh with truncation.
- :class:`LinearSolver` (σ = identity): A = [u, 1] B with B = blockdiag(Cᵀ, 1), rank ≤ half + 1. With
  K = B Bᵀ = blockdiag(CᵀC, 1) = L Lᵀ, Q = L⁻¹ B has orthonormal rows and A = X̃ Q, X̃ = [u, 1] L, so
  A⁺ = Qᵀ X̃⁺ (Penrose identity for orthonormal rows): an SVD of the N × (half+1) matrix X̃ replaces
  the N × N Gram, exactly.
- :class:`SVDSolver`: thin SVD of A (the published method), kept for comparison.
"""

from __future__ import annotations

import torch

Solution = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # δW (half, H), δb (half,), realised (N, half)


def default_rtol(n: int, dtype: torch.dtype) -> float:
    return n * torch.finfo(dtype).eps


def gram_with_bias(features: torch.Tensor, pieces: int | None = None) -> torch.Tensor:
    """A Aᵀ = a aᵀ + 1 1ᵀ (N × N) from the lower block-triangle only, then mirrored.

    The rows are cut into ``pieces`` slices (default: one per 64 rows, at most 4); slice i is
    multiplied with rows [0, end_i) only, so (pieces + 1) / (2 · pieces) of the full N²H flops.
    """
    n = features.shape[0]
    pieces = max(1, min(4, n // 64)) if pieces is None else pieces
    bounds = [round(i * n / pieces) for i in range(pieces + 1)]
    gram = features.new_empty(n, n)
    for start, end in zip(bounds, bounds[1:]):
        gram[start:end, :end] = torch.addmm(features.new_ones(()), features[start:end], features[:end].T)
    lower = gram.tril()
    return lower + lower.tril(-1).T


def keep_mask(eigenvalues: torch.Tensor, rtol: float, atol: float) -> torch.Tensor:
    """Mask of eigenvalues λ > max(atol, rtol · λ_max)."""
    top = eigenvalues.max() if eigenvalues.numel() else eigenvalues.new_zeros(())
    return eigenvalues > torch.clamp(rtol * top, min=atol)


def accepted_cholesky(gram: torch.Tensor, rtol: float, atol: float) -> torch.Tensor | None:
    """Cholesky factor of ``gram`` if it succeeds with every pivot L_ii² > max(atol, rtol · ‖gram‖_F), else None."""
    chol, info = torch.linalg.cholesky_ex(gram)
    threshold = max(atol, rtol * float(torch.linalg.matrix_norm(gram)))
    if int(info) == 0 and float(chol.diagonal().square().min()) > threshold:
        return chol
    return None


class TruncatedPinv:
    """Truncated thin SVD M = U S Vᵀ of an N × k matrix, for M⁺ t = V S⁻¹ Uᵀ t and M M⁺ t = U Uᵀ t."""

    def __init__(self, matrix: torch.Tensor, rtol: float, atol: float) -> None:
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        keep = keep_mask(s.square(), rtol, atol)
        self.u, self.inv_s, self.v = u[:, keep], 1.0 / s[keep], vh[keep].T
        self.rank = int(keep.sum())

    def solve(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M⁺ t, M M⁺ t): the min-norm least-squares solution and the part of t it realises."""
        projected = self.u.T @ target
        return self.v @ (self.inv_s[:, None] * projected), self.u @ projected


def _split(weight_aug_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """δW_augᵀ ((H+1), half) → (δW (half, H), δb (half,))."""
    return weight_aug_t[:-1].T, weight_aug_t[-1]


class GramSolver:
    """Cholesky (eigh where rank-deficient) of the N × N Gram of features ``a`` (N, H) plus a bias column."""

    def __init__(self, features: torch.Tensor, rtol: float | None, atol: float, pieces: int | None = None) -> None:
        n = features.shape[0]
        self.features = features
        self.rtol = default_rtol(n, features.dtype) if rtol is None else rtol
        gram = gram_with_bias(features, pieces)
        self.gram = gram
        self.chol = None
        if n <= features.shape[1] + 1:
            self.chol = accepted_cholesky(gram, self.rtol, atol)
        if self.chol is not None:
            self.rank = n
        else:
            eigenvalues, vectors = torch.linalg.eigh(gram)
            keep = keep_mask(eigenvalues, self.rtol, atol)
            self.vectors, self.inv_eigenvalues = vectors[:, keep], 1.0 / eigenvalues[keep]
            self.rank = int(keep.sum())
        self.full_rank = self.rank == n

    def solve(self, target: torch.Tensor) -> Solution:
        if self.chol is not None:
            coef = torch.cholesky_solve(target, self.chol)
            realised = self.gram @ coef
        else:
            projected = self.vectors.T @ target
            coef = self.vectors @ (self.inv_eigenvalues[:, None] * projected)
            realised = self.vectors @ projected
        return coef.T @ self.features, coef.sum(dim=0), realised


class LinearSolver:
    """Exact min-norm solve for linear features a = u Cᵀ through the (half+1)-dim factorisation."""

    def __init__(self, inputs: torch.Tensor, proj: torch.Tensor, rtol: float | None, atol: float) -> None:
        n, half = inputs.shape
        self.proj = proj
        self.rtol = default_rtol(n, inputs.dtype) if rtol is None else rtol
        k = torch.zeros(half + 1, half + 1, dtype=inputs.dtype, device=inputs.device)
        k[:half, :half] = proj.T @ proj
        k[half, half] = 1.0
        self.chol_k, info = torch.linalg.cholesky_ex(k)
        if int(info) != 0:
            raise ValueError(f"the fixed projection (shape {tuple(proj.shape)}) does not have full column rank")
        inputs_aug = torch.cat([inputs, inputs.new_ones(n, 1)], dim=1)
        self.pinv = TruncatedPinv(inputs_aug @ self.chol_k, self.rtol, atol)
        self.rank = self.pinv.rank
        self.full_rank = self.rank == n

    def solve(self, target: torch.Tensor) -> Solution:
        coef, realised = self.pinv.solve(target)  # X̃⁺ t, (half+1, half)
        m = torch.linalg.solve_triangular(self.chol_k.T, coef, upper=True)  # L⁻ᵀ c
        return (self.proj @ m[:-1]).T, m[-1], realised


class SVDSolver:
    """Thin SVD of the N × (H+1) feature matrix A (the published pseudo-inverse)."""

    def __init__(self, features: torch.Tensor, rtol: float | None, atol: float) -> None:
        n = features.shape[0]
        self.rtol = default_rtol(n, features.dtype) if rtol is None else rtol
        aug = torch.cat([features, features.new_ones(n, 1)], dim=1)
        self.pinv = TruncatedPinv(aug, self.rtol, atol)
        self.rank = self.pinv.rank
        self.full_rank = self.rank == n

    def solve(self, target: torch.Tensor) -> Solution:
        coef, realised = self.pinv.solve(target)
        return (*_split(coef), realised)


def make_solver(state, solver: str, rtol: float | None, atol: float):
    """The solver for a coupling state (see :mod:`dynamics.gauss_newton.tangents`): "gram" or "svd"."""
    if solver == "svd":
        return SVDSolver(state.features, rtol, atol)
    if state.is_linear and state.coupling.proj.shape[0] >= state.coupling.proj.shape[1]:
        return LinearSolver(state.inputs, state.coupling.proj, rtol, atol)
    return GramSolver(state.features, rtol, atol)
