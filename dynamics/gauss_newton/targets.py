"""Output-space Gauss–Newton targets ε = H⁺ g and the batch losses they belong to.

Conventions (N samples, O outputs, logits f of shape (N, O)):

- ``loss="mse"``: per-sample ℓ = ‖f − y‖², batch loss L = (1/N) Σ_n ‖f_n − y_n‖² (mean over samples,
  *sum* over outputs). g = 2(f − y), H = 2I, so ε = H⁺ g = f − y.
- ``loss="ce"``: per-sample ℓ = −log softmax(f)_y, batch loss L = mean over samples. g = p − e_y and
  H = diag(p) − ppᵀ (singular along the all-ones vector).
  ``ce_target="identity"`` (default; the published experiments): ε = p − e_y (unit output Hessian).
  ``ce_target="exact"``: ε = H⁺(p − e_y) = (1/p_y)(1/O · 1 − e_y), the minimum-norm solution of
  Hε = g (check: H(−e_y/p_y) = p − e_y, then project out the all-ones null direction). 1/p_y is
  computed as exp(−log_softmax(f)_y), never by a per-sample eigendecomposition.

The 1/N of the batch mean scales g and H alike and cancels in ε. Reference: Buffelli et al. 2024
(arXiv 2411.07979), §3; DESIGN.md §3.
"""

from __future__ import annotations

import torch

LOSSES = ("ce", "mse")
CE_TARGETS = ("identity", "exact")


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``; otherwise a ValueError naming it."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_inputs(x: object, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """Raise unless ``x`` is a finite (N, dim) tensor of ``dtype`` with N ≥ 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != dim or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, {dim}) with N >= 1, got shape {tuple(x.shape)}")
    if x.dtype != dtype:
        raise TypeError(f"x has dtype {x.dtype} but the model has dtype {dtype}; convert one of them")
    if not torch.isfinite(x).all():
        raise ValueError(f"x contains {int((~torch.isfinite(x)).sum())} non-finite (NaN/Inf) values")
    return x


def check_targets(y: object, n: int, n_outputs: int, loss: str, dtype: torch.dtype) -> torch.Tensor:
    """Validate ``y`` for ``loss`` and return it in the form :func:`output_targets` uses.

    "ce": int64 labels (N,) in [0, O). "mse": floating (N, O) targets (cast to ``dtype``) or int64
    labels (N,) in [0, O), which are one-hot encoded. Non-finite values are rejected.
    """
    check_choice("loss", loss, LOSSES)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if y.dtype == torch.int64:
        if y.shape != (n,):
            raise ValueError(f"integer labels y must have shape ({n},), got shape {tuple(y.shape)}")
        if n and (int(y.min()) < 0 or int(y.max()) >= n_outputs):
            bad = y[(y < 0) | (y >= n_outputs)][0].item()
            raise ValueError(f"label {bad} in y is out of range [0, {n_outputs})")
        if loss == "mse":
            return torch.nn.functional.one_hot(y, n_outputs).to(dtype)
        return y
    if loss == "ce":
        raise TypeError(f"y for loss='ce' must be int64 class labels, got dtype {y.dtype}")
    if not y.dtype.is_floating_point:
        raise TypeError(f"y for loss='mse' must be floating (N, O) targets or int64 labels, got dtype {y.dtype}")
    if y.shape != (n, n_outputs):
        raise ValueError(f"y for loss='mse' must have shape ({n}, {n_outputs}), got shape {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError(f"y contains {int((~torch.isfinite(y)).sum())} non-finite (NaN/Inf) values")
    return y.to(dtype)


def batch_loss(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """L: mean cross-entropy ("ce", int labels) or mean over samples of ‖f − y‖² ("mse", (N, O) y)."""
    if check_choice("loss", loss, LOSSES) == "ce":
        return torch.nn.functional.cross_entropy(logits, y)
    return (logits - y).square().sum(dim=1).mean()


def output_targets(logits: torch.Tensor, y: torch.Tensor, loss: str, *, ce_target: str = "identity") -> torch.Tensor:
    """The output-space Newton target ε = H⁺ g per sample, shape (N, O) like ``logits``.

    Args:
        logits: f, (N, O). y: int64 labels (N,) for "ce"; (N, O) floats or int64 labels for "mse".
        loss: "ce" or "mse" (see the module docstring for the exact loss conventions).
        ce_target: "identity" (ε = p − e_y) or "exact" (ε = (1/p_y)(1/O − e_y)); ignored for "mse".

    A GN step with learning rate α asks the linearised outputs to move by −α ε.
    """
    check_choice("loss", loss, LOSSES)
    check_choice("ce_target", ce_target, CE_TARGETS)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be a (N, O) tensor, got {getattr(logits, 'shape', type(logits).__name__)}")
    n, n_outputs = logits.shape
    y = check_targets(y, n, n_outputs, loss, logits.dtype)
    if loss == "mse":
        return logits - y
    log_p = torch.log_softmax(logits, dim=1)
    one_hot = torch.nn.functional.one_hot(y, n_outputs).to(logits.dtype)
    if ce_target == "identity":
        return log_p.exp() - one_hot
    inv_p_y = torch.exp(-log_p.gather(1, y[:, None]))
    return inv_p_y * (1.0 / n_outputs - one_hot)
