"""Output-space metric of the exact cross-entropy GN step: a factor S of the softmax Hessian H = S Sᵀ.

For a sample with probabilities p (O,), H = diag(p) − p pᵀ = (I − p 1ᵀ) diag(p) (I − 1 pᵀ), so
S₀ = (I − p 1ᵀ) diag(√p) is a factor (S₀ S₀ᵀ = H). S₀ √p = 0 (‖√p‖ = 1), so S = S₀ B with B (O × (O−1))
an orthonormal basis of √p^⊥ is a factor too, of full column rank O − 1 whenever every p_i > 0.
B is read off a Householder reflection V = I − 2 w wᵀ/wᵀw, w = √p + e_k (k = argmax p), which maps
√p to −e_k: its columns j ≠ k span √p^⊥. No eigendecomposition is needed.

With it the Moore–Penrose GN step δθ = −α (JᵀHJ)⁺ Jᵀ g (g = H ε) becomes, with M = Sᵀ J,
δθ = −α M⁺ Sᵀ ε = −α Jᵀ S (Sᵀ K S)⁺ Sᵀ ε, K = J Jᵀ the batch NTK (S block-diagonal over samples).
"""

from __future__ import annotations

import torch


def ce_hessian_factor(logits: torch.Tensor) -> torch.Tensor:
    """S (N, O, O−1) with S_n S_nᵀ = diag(p_n) − p_n p_nᵀ, p_n = softmax(logits_n), in logits' dtype."""
    n, n_outputs = logits.shape
    p = torch.softmax(logits, dim=1)
    root = p.sqrt()
    eye = torch.eye(n_outputs, dtype=logits.dtype, device=logits.device)
    s0 = (eye - p[:, :, None]) * root[:, None, :]  # (I − p 1ᵀ) diag(√p): column b scaled by √p_b
    k = p.argmax(dim=1)
    w = root + eye[k]
    reflection = eye - 2 * w[:, :, None] * w[:, None, :] / (w * w).sum(dim=1)[:, None, None]
    keep = torch.ones(n, n_outputs, dtype=torch.bool, device=logits.device)
    keep[torch.arange(n), k] = False
    basis = reflection.transpose(1, 2)[keep].reshape(n, n_outputs - 1, n_outputs).transpose(1, 2)
    return s0 @ basis


def centre_per_sample(values: torch.Tensor) -> torch.Tensor:
    """P v: each sample's (row's) mean over outputs removed, (N, O) → (N, O)."""
    return values - values.mean(dim=1, keepdim=True)
