"""Empirical NTK of any model from per-sample Jacobians (torch.func), contracted parameter by parameter.

For a chunk of c samples the Jacobian J_k (c, O, P_k) of the flattened outputs with respect to each
trained parameter k comes from ``vmap(jacrev(f))`` over single samples, f = the model called through
``torch.func.functional_call`` on a batch of one. Two chunks' Jacobians are contracted as

    Θ[n, m, o, p] = Σ_k Σ_i J_k[n, o, i] J_k[m, p, i]        (traced: Σ_o Θ[n, m, o, o]),

one parameter at a time (a (c·O, P_k) × (P_k, c'·O) product, cut into blocks along P_k for
accuracy, see :func:`dynamics.ntk.blocks.row_gram`), so at most two chunks' Jacobians are
alive at once. This is the reference the structured path is tested against (as in neural-tangents'
"jacobian contraction" implementation, Novak et al. 2022).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from dynamics.ntk.blocks import row_gram

#: Default bound on the numbers in one chunk's Jacobian (c · O · P) when chunk_size is None.
JACOBIAN_BUDGET = 2 ** 27


def split_parameters(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(trained parameters, everything else: frozen parameters and buffers), all detached."""
    trained, constants = {}, {}
    for name, param in model.named_parameters():
        (trained if param.requires_grad else constants)[name] = param.detach()
    for name, buffer in model.named_buffers():
        constants[name] = buffer
    return trained, constants


def default_chunk_size(n_out: int, n_params: int, budget: int = JACOBIAN_BUDGET) -> int:
    """The largest chunk whose Jacobian (chunk, O, P) holds at most ``budget`` numbers (≥ 1)."""
    return max(1, budget // max(1, n_out * n_params))


def jacobian_features(model: nn.Module, trained: dict[str, torch.Tensor], constants: dict[str, torch.Tensor],
                      x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-parameter Jacobians of the chunk x: name → (c, O, P_k)."""

    def single(params: dict[str, torch.Tensor], sample: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (params, constants), (sample.unsqueeze(0),)).reshape(-1)

    with torch.enable_grad():
        jac = vmap(jacrev(single), in_dims=(None, 0))(trained, x)
    return {name: j.reshape(j.shape[0], j.shape[1], -1) for name, j in jac.items()}


def contract_jacobians(j1: dict[str, torch.Tensor], j2: dict[str, torch.Tensor], trace: bool) -> torch.Tensor:
    """Θ block (c1, c2) traced over outputs, or (c1, c2, O, O): Σ_k J1_k J2_kᵀ."""
    total = None
    for name, a in j1.items():
        b = j2[name]
        c1, n_out, _ = a.shape
        c2 = b.shape[0]
        if trace:
            block = row_gram(a.reshape(c1, -1), b.reshape(c2, -1))
        else:
            block = row_gram(a.reshape(c1 * n_out, -1), b.reshape(c2 * n_out, -1))
            block = block.reshape(c1, n_out, c2, n_out).permute(0, 2, 1, 3)
        total = block if total is None else total + block
    return total.contiguous()
