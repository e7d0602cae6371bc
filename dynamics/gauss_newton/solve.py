"""Minimum-norm solves for one coupling F(u) = W a(u) + b: find (δW, δb) with A [δW, δb]ᵀ = t.

A = [a, 1] (N × (H+1)) are the coupling's features with a ones column for the bias; t (N × half) is the
desired change of the coupling's output. All solvers return the truncated Moore–Penrose solution
δWᵀ_aug = A⁺ t and the change it *realises*, A A⁺ t (= t when A keeps full row rank N).

**Truncation — the one rule** (:class:`Truncation`, honoured by every solver here and by
:class:`~dynamics.gauss_newton.KernelGN`): a direction with Gram eigenvalue λ (of A Aᵀ, = squared
singular value s² of A; of the NTK for KernelGN) is kept iff λ > max(atol, rtol · λ_max).
Named rules (``truncation=``): "exact" (default): rtol = N · eps(float64), atol = 0 — keeps every
direction that float64 arithmetic resolves; "paper": the authors' released code, s ≥ 1e-2 · s_max and
s ≥ 1e-5, i.e. rtol = 1e-4, atol = 1e-10 on λ (> instead of ≥ differs only at equality). An explicit
rtol/atol replaces the named rule's value.

**Precision.** Every solve runs in float64 (:data:`SOLVE_DTYPE`), whatever the model's dtype: Gram,
Cholesky/eigh and SVD of float32 features are formed in float64, and only the results are cast back.
In float32 the rounding of the Gram alone would cost ρ ≈ eps32 · κ(A Aᵀ) (≈ 0.08 on real MNIST, where
κ ≈ 6.5e5); in float64 it is ≈ 1e-10. The products δWᵀ = aᵀ c stay in the features' dtype: ρ is then
limited by the rounding of δθ to that dtype (measured 2e-5 in float32 on real MNIST at the paper
size), which the solvers' ρ does not include — ``benchmarks/gn_step.py`` measures it independently.

- :class:`GramSolver`: Cholesky of the N × N Gram A Aᵀ = a aᵀ + 1 1ᵀ, δW_augᵀ = Aᵀ (A Aᵀ)⁻¹ t. The
  factor is accepted only when the rule provably keeps every direction: λ_min ≥ 1/tr((AAᵀ)⁻¹) =
  1/‖L⁻¹‖²_F > max(atol, rtol · ‖AAᵀ‖_F) ≥ the rule's threshold. Otherwise eigh decides by the rule.
- :class:`LinearSolver` (σ = identity): A = [u, 1] B with B = blockdiag(Cᵀ, 1), rank ≤ half + 1. With
  K = B Bᵀ = blockdiag(CᵀC, 1) = L Lᵀ, Q = L⁻¹ B has orthonormal rows and A = X̃ Q, X̃ = [u, 1] L, so
  A⁺ = Qᵀ X̃⁺ and A, X̃ share their singular values: an SVD of the N × (half+1) matrix X̃ replaces
  the N × N Gram, exactly.
- :class:`SVDSolver`: thin SVD of A (the published method), kept for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Solution = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # δW (half, H), δb (half,), realised (N, half)
SOLVE_DTYPE = torch.float64
TRUNCATIONS = ("exact", "paper")
PAPER_RTOL, PAPER_ATOL = 1e-4, 1e-10  # s >= 1e-2 s_max and s >= 1e-5, on λ = s²


@dataclass(frozen=True)
class Truncation:
    """Keep a direction iff its Gram eigenvalue λ (= s²) satisfies λ > max(atol, rtol · λ_max)."""

    rtol: float
    atol: float

    @classmethod
    def named(cls, name: str, n: int, rtol: float | None = None, atol: float | None = None) -> "Truncation":
        """The rule ``name`` ("exact" | "paper") for an N-row problem; explicit rtol/atol override it."""
        if name not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {list(TRUNCATIONS)}, got {name!r}")
        base_rtol, base_atol = (n * torch.finfo(SOLVE_DTYPE).eps, 0.0) if name == "exact" else (PAPER_RTOL, PAPER_ATOL)
        return cls(base_rtol if rtol is None else rtol, base_atol if atol is None else atol)

    def threshold(self, top: float) -> float:
        """max(atol, rtol · top) for the largest eigenvalue ``top``."""
        return max(self.atol, self.rtol * top)

    def keep(self, eigenvalues: torch.Tensor) -> torch.Tensor:
        """Mask of the eigenvalues the rule keeps."""
        top = float(eigenvalues.max()) if eigenvalues.numel() else 0.0
        return eigenvalues > self.threshold(top)


def gram_with_bias(features: torch.Tensor, pieces: int | None = None) -> torch.Tensor:
    """A Aᵀ = a aᵀ + 1 1ᵀ (N × N) from the lower block-triangle only, then mirrored.

    The rows are cut into ``pieces`` slices (default: one per 32 rows, at most 8); slice i is
    multiplied with rows [0, end_i) only, so (pieces + 1) / (2 · pieces) of the full N²H flops
    (9/16 with 8 slices; 16 slices measured slower at N = 1000, H = 8000).
    """
    n = features.shape[0]
    pieces = max(1, min(8, n // 32)) if pieces is None else pieces
    bounds = [round(i * n / pieces) for i in range(pieces + 1)]
    gram = features.new_empty(n, n)
    for start, end in zip(bounds, bounds[1:]):
        gram[start:end, :end] = torch.addmm(features.new_ones(()), features[start:end], features[:end].T)
    lower = gram.tril()
    return lower + lower.tril(-1).T


def accepted_cholesky(gram: torch.Tensor, rule: Truncation) -> torch.Tensor | None:
    """Cholesky factor L of ``gram`` if the rule certainly keeps all its directions, else None.

    Certificate: λ_min ≥ 1/tr(gram⁻¹) = 1/‖L⁻¹‖²_F and λ_max ≤ ‖gram‖_F, so
    1/‖L⁻¹‖²_F > max(atol, rtol · ‖gram‖_F) implies λ_min > the rule's threshold.
    """
    chol, info = torch.linalg.cholesky_ex(gram)
    if int(info) != 0:
        return None
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    inverse_trace = float(torch.linalg.solve_triangular(chol, eye, upper=False).square().sum())
    if not inverse_trace > 0 or 1.0 / inverse_trace <= rule.threshold(float(torch.linalg.matrix_norm(gram))):
        return None
    return chol


class EighPinv:
    """Truncated eigendecomposition of a symmetric PSD matrix G: G⁺ t and G G⁺ t by the rule."""

    def __init__(self, matrix: torch.Tensor, rule: Truncation) -> None:
        eigenvalues, vectors = torch.linalg.eigh(matrix)
        keep = rule.keep(eigenvalues)
        self.vectors, self.inv_eigenvalues = vectors[:, keep], 1.0 / eigenvalues[keep]
        self.rank = int(keep.sum())

    def solve(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        projected = self.vectors.T @ target
        return self.vectors @ (self.inv_eigenvalues[:, None] * projected), self.vectors @ projected


class TruncatedPinv:
    """Truncated thin SVD M = U S Vᵀ of an N × k matrix, for M⁺ t = V S⁻¹ Uᵀ t and M M⁺ t = U Uᵀ t."""

    def __init__(self, matrix: torch.Tensor, rule: Truncation) -> None:
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        keep = rule.keep(s.square())
        self.u, self.inv_s, self.v = u[:, keep], 1.0 / s[keep], vh[keep].T
        self.rank = int(keep.sum())

    def solve(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M⁺ t, M M⁺ t): the min-norm least-squares solution and the part of t it realises."""
        projected = self.u.T @ target
        return self.v @ (self.inv_s[:, None] * projected), self.u @ projected


def _split(weight_aug_t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """δW_augᵀ ((H+1), half) → (δW (half, H), δb (half,)) in ``dtype``."""
    return weight_aug_t[:-1].T.to(dtype), weight_aug_t[-1].to(dtype)


class GramSolver:
    """Cholesky (eigh where the rule truncates) of the float64 N × N Gram of features ``a`` (N, H) plus a bias column."""

    def __init__(self, features: torch.Tensor, rule: Truncation, pieces: int | None = None) -> None:
        n = features.shape[0]
        self.dtype = features.dtype
        self.features = features
        self.gram = gram_with_bias(features.to(SOLVE_DTYPE), pieces)
        self.chol = accepted_cholesky(self.gram, rule) if n <= features.shape[1] + 1 else None
        self.pinv = None if self.chol is not None else EighPinv(self.gram, rule)
        self.rank = n if self.chol is not None else self.pinv.rank
        self.full_rank = self.rank == n

    def solve(self, target: torch.Tensor) -> Solution:
        target = target.to(SOLVE_DTYPE)
        if self.chol is not None:
            coef = torch.cholesky_solve(target, self.chol)
            realised = self.gram @ coef
        else:
            coef, realised = self.pinv.solve(target)
        coef = coef.to(self.dtype)  # δWᵀ = aᵀ c in the features' dtype: as accurate as rounding δW to it
        return coef.T @ self.features, coef.sum(dim=0), realised.to(self.dtype)


def projection_factor(proj: torch.Tensor) -> torch.Tensor:
    """L (float64, (half+1)²) with L Lᵀ = blockdiag(CᵀC, 1) for the fixed projection C (H × half)."""
    half = proj.shape[1]
    proj = proj.to(SOLVE_DTYPE)
    k = torch.zeros(half + 1, half + 1, dtype=SOLVE_DTYPE, device=proj.device)
    k[:half, :half] = proj.T @ proj
    k[half, half] = 1.0
    chol_k, info = torch.linalg.cholesky_ex(k)
    if int(info) != 0:
        raise ValueError(f"the fixed projection (shape {tuple(proj.shape)}) does not have full column rank")
    return chol_k


class ProjectionFactors:
    """Cache of :func:`projection_factor` per projection buffer, recomputed when the buffer is
    replaced (``.to()``), edited in place (version counter) or changes dtype/device."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[tuple, torch.Tensor]] = {}

    def __call__(self, proj: torch.Tensor) -> torch.Tensor:
        key = (proj.data_ptr(), proj._version, proj.dtype, proj.device, tuple(proj.shape))
        hit = self._cache.get(id(proj))
        if hit is None or hit[0] != key:
            hit = (key, projection_factor(proj))
            self._cache[id(proj)] = hit
        return hit[1]


class LinearSolver:
    """Exact min-norm solve for linear features a = u Cᵀ through the (half+1)-dim factorisation, in float64."""

    def __init__(self, inputs: torch.Tensor, proj: torch.Tensor, rule: Truncation,
                 chol_k: torch.Tensor | None = None) -> None:
        n = inputs.shape[0]
        self.dtype = inputs.dtype
        self.proj = proj
        self.chol_k = projection_factor(proj) if chol_k is None else chol_k
        inputs_aug = torch.cat([inputs, inputs.new_ones(n, 1)], dim=1).to(SOLVE_DTYPE)
        self.pinv = TruncatedPinv(inputs_aug @ self.chol_k, rule)
        self.rank = self.pinv.rank
        self.full_rank = self.rank == n

    def solve(self, target: torch.Tensor) -> Solution:
        coef, realised = self.pinv.solve(target.to(SOLVE_DTYPE))  # X̃⁺ t, (half+1, half)
        m = torch.linalg.solve_triangular(self.chol_k.T, coef, upper=True).to(self.dtype)  # L⁻ᵀ c
        return (self.proj @ m[:-1]).T, m[-1], realised.to(self.dtype)


class SVDSolver:
    """Thin float64 SVD of the N × (H+1) feature matrix A (the published pseudo-inverse)."""

    def __init__(self, features: torch.Tensor, rule: Truncation) -> None:
        n = features.shape[0]
        self.dtype = features.dtype
        aug = torch.cat([features, features.new_ones(n, 1)], dim=1).to(SOLVE_DTYPE)
        self.pinv = TruncatedPinv(aug, rule)
        self.rank = self.pinv.rank
        self.full_rank = self.rank == n

    def solve(self, target: torch.Tensor) -> Solution:
        coef, realised = self.pinv.solve(target.to(SOLVE_DTYPE))
        return (*_split(coef, self.dtype), realised.to(self.dtype))


def make_solver(state, solver: str, rule: Truncation, factors: ProjectionFactors | None = None):
    """The solver for a coupling state (see :mod:`dynamics.gauss_newton.tangents`): "gram" or "svd"."""
    if solver == "svd":
        return SVDSolver(state.features, rule)
    proj = state.coupling.proj
    if state.is_linear and proj.shape[0] >= proj.shape[1]:
        return LinearSolver(state.inputs, proj, rule, None if factors is None else factors(proj))
    return GramSolver(state.features, rule)
