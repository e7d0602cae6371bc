"""Sharpness: the top eigenvalues of the loss Hessian and of the generalised Gauss–Newton matrix.

For a batch (x, y) of N samples and the batch loss L(θ) = (1/N) Σ_n ℓ(f(x_n; θ), y_n) (conventions
of :mod:`dynamics.gauss_newton.targets`: mean cross-entropy, or the mean over samples of ‖f − y‖²):

- ``matrix="hessian"``: H = ∇²_θ L (P × P, indefinite);
- ``matrix="ggn"``: G = (1/N) Σ_n J_nᵀ ∇²_f ℓ_n J_n (positive semi-definite; for MSE 2·JᵀJ/N).

:func:`top_eigenvalues` returns the k largest (algebraic) eigenvalues by the Lanczos method
(``scipy.sparse.linalg.eigsh``, ARPACK) on matrix–vector products from curvlinops
(``HessianLinearOperator`` / ``GGNLinearOperator``: forward-over-reverse HVPs, the P × P matrix is
never formed); the start vector is drawn from a seeded generator, so the same call gives the same
numbers. The top Hessian eigenvalue is the *sharpness* of Cohen et al. 2021 ("Gradient descent on
neural networks typically occurs at the edge of stability"), which gradient descent with step η
drives to ≈ 2/η; with a diagonal ``preconditioner`` P it is the *preconditioned sharpness*
λ_max(P^{-1/2} H P^{-1/2}) of Cohen et al. 2022 ("Adaptive gradient methods at the edge of
stability"); :mod:`dynamics.sharpness` gives Adam's P and the stability thresholds.

curvlinops is an optional dependency (``pip install gn-dynamics[curvature]`` and
``curvlinops-for-pytorch``); without it :func:`top_eigenvalues` raises ImportError saying so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from dynamics.gauss_newton.targets import LOSSES, check_choice, check_targets
from dynamics.models.layers import eval_mode

MATRICES = ("hessian", "ggn")
DENSE_LIMIT = 32    # P up to this: the operator is applied to the identity and eigvalsh'd (ARPACK needs k < P)
DEFAULT_MAXITER = 200   # ARPACK restarts (each at most ncv matrix-vector products)
MIN_LANCZOS_VECTORS = 10   # ncv = max(2k + 2, 10): k = 1 converges in ~11 products on the default RevMLP
                           # (scipy's default ncv = 20 needs 21, to the same eigenvalue within 1e-8)


def _operator_class(matrix: str):
    try:
        from curvlinops import GGNLinearOperator, HessianLinearOperator
    except ImportError as error:
        raise ImportError("dynamics.curvature needs curvlinops: pip install 'gn-dynamics[curvature]' and "
                          "'curvlinops-for-pytorch' (make install does both)") from error
    return HessianLinearOperator if matrix == "hessian" else GGNLinearOperator


def _diagonal(preconditioner: object, params: dict[str, torch.Tensor]) -> np.ndarray:
    """The preconditioner's diagonal as one float64 vector in parameter order; positive and finite."""
    if isinstance(preconditioner, Mapping):
        missing = sorted(set(params) - set(preconditioner))
        if missing:
            raise ValueError(f"preconditioner lacks the trained parameters {missing}")
        parts = []
        for name, p in params.items():
            d = preconditioner[name]
            if not isinstance(d, torch.Tensor) or d.shape != p.shape:
                raise ValueError(f"preconditioner[{name!r}] must be a tensor of shape {tuple(p.shape)}, got "
                                 f"{getattr(d, 'shape', type(d).__name__)}")
            parts.append(d.detach().reshape(-1).double().cpu())
        flat = torch.cat(parts)
    elif isinstance(preconditioner, torch.Tensor):
        flat = preconditioner.detach().reshape(-1).double().cpu()
        total = sum(p.numel() for p in params.values())
        if flat.numel() != total:
            raise ValueError(f"a flat preconditioner must have {total} entries, got {flat.numel()}")
    else:
        raise TypeError(f"preconditioner must be a dict name -> tensor or a flat tensor, got "
                        f"{type(preconditioner).__name__}")
    if not bool(torch.isfinite(flat).all()) or not bool((flat > 0).all()):
        raise ValueError("preconditioner entries must be finite and > 0 (it is the diagonal of a positive matrix)")
    return flat.numpy()


def top_eigenvalues(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str = "ce",
                    matrix: str = "hessian", k: int = 1, preconditioner: object = None, tol: float | None = None,
                    maxiter: int = DEFAULT_MAXITER, seed: int = 0) -> torch.Tensor:
    """The k largest eigenvalues of the batch loss Hessian or GGN w.r.t. the trained parameters.

    Args:
        model: any ``nn.Module`` mapping x (N, ...) to logits (N, O); evaluated in eval mode (its
            train/eval flags are restored); parameters with ``requires_grad`` are the variables.
        x: the batch's inputs (N, ...).
        y: its targets: int64 labels (N,) for "ce", float targets (N, O) or int64 labels (one-hot)
            for "mse" (:func:`dynamics.gauss_newton.targets.check_targets`).
        loss: "ce" (mean cross-entropy) or "mse" (mean over samples of ‖f − y‖², no ½).
        matrix: "hessian" (∇²L) or "ggn" (JᵀHJ/N).
        k: how many eigenvalues (1 ≤ k < P for Lanczos; P ≤ 32 is solved densely).
        preconditioner: None, or the diagonal d > 0 of P (dict name → tensor of the parameter's shape,
            or a flat tensor in ``named_parameters`` order): the eigenvalues of P^{-1/2} A P^{-1/2}
            (= those of P⁻¹A).
        tol: ARPACK's relative accuracy of each eigenvalue (default √eps of the model's dtype:
            3.5e-4 for float32, 1.5e-8 for float64); maxiter: ARPACK restarts.
        seed: seed of the Lanczos start vector (same seed, same numbers).

    Returns a float64 CPU tensor (k,), descending. Raises ValueError/TypeError for bad arguments,
    ImportError without curvlinops, RuntimeError when Lanczos does not converge in ``maxiter``.
    References: Lanczos (ARPACK, Lehoucq et al. 1998); Cohen et al. 2021 (ICLR), 2022 (arXiv 2207.14484).
    """
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_choice("loss", loss, LOSSES)
    check_choice("matrix", matrix, MATRICES)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    size = sum(p.numel() for p in params.values())
    largest = size if size <= DENSE_LIMIT else size - 1   # ARPACK: k < P
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= largest:
        raise ValueError(f"k must be an int in [1, {largest}] ({size} trained parameters), got {k!r}")
    if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1:
        raise ValueError(f"maxiter must be a positive int, got {maxiter!r}")
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a tensor with a leading sample dimension N >= 1, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    dtype = next(iter(params.values())).dtype
    if tol is None:
        tol = math.sqrt(torch.finfo(dtype).eps)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    scale = _diagonal(preconditioner, params) ** -0.5 if preconditioner is not None else None
    with eval_mode(model), torch.no_grad():
        logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError(f"the model must return logits of shape (N, O) = ({x.shape[0]}, O), got "
                         f"{getattr(logits, 'shape', type(logits).__name__)}")
    targets = check_targets(y, x.shape[0], logits.shape[1], loss, logits.dtype)
    # "mse": curvlinops' summed squared error is N · L, so its matrices are divided by N
    loss_func = nn.CrossEntropyLoss(reduction="mean") if loss == "ce" else nn.MSELoss(reduction="sum")
    factor = 1.0 if loss == "ce" else 1.0 / x.shape[0]
    with eval_mode(model):
        operator = _operator_class(matrix)(model, loss_func, list(params.values()), [(x, targets)],
                                           check_deterministic=False).to_scipy(dtype=np.float64)

        def apply(v: np.ndarray) -> np.ndarray:
            if scale is None:
                return factor * (operator @ v)
            w = scale[:, None] * v.reshape(size, -1)
            return (factor * scale[:, None] * (operator @ w)).reshape(v.shape)

        if size <= DENSE_LIMIT:
            dense = apply(np.eye(size))
            values = np.linalg.eigvalsh(0.5 * (dense + dense.T))[::-1][:k]
            return torch.from_numpy(values.copy())
        linear = LinearOperator((size, size), matvec=apply, matmat=apply, dtype=np.float64)
        start = np.random.default_rng(seed).standard_normal(size)
        try:
            values = eigsh(linear, k=k, which="LA", v0=start, tol=tol, maxiter=maxiter,
                           ncv=min(size, max(2 * k + 2, MIN_LANCZOS_VECTORS)), return_eigenvectors=False)
        except ArpackNoConvergence as error:
            raise RuntimeError(f"Lanczos did not converge to {k} eigenvalue(s) of the {matrix} in maxiter={maxiter} "
                               f"restarts (tol={tol:g}); raise maxiter or tol") from error
    return torch.from_numpy(np.sort(values)[::-1].copy())
