"""J u and Jᵀ c of any model from its Jacobian rows, for models that forward-mode AD or torch.func.vjp refuse.

The Gauss–Newton step needs Jᵀ c (the update) and J δθ (its residual ρ). The direct routes — one
``torch.func.vjp`` and one forward-mode pass — fail for activation checkpointing (torch.func refuses
saved-tensor hooks), for operations without forward-mode derivatives (CPU flash attention,
``nn.MultiheadAttention``'s native kernel) and for modules torch.func cannot batch. These functions
compute the same products from the per-sample Jacobian rows of :mod:`dynamics.ntk.rows` (torch.func
where it works, plain autograd otherwise), chunked to the memory budget of :mod:`dynamics.ntk.budget`:

    (J u)[n, o] = Σ_k ⟨J_k[n, o, :], u_k⟩,        (Jᵀ c)_k = Σ_{n, o} c[n, o] J_k[n, o, :].

Each costs one Jacobian of the batch (N·O reverse passes), where the direct routes cost one pass.
"""

from __future__ import annotations

import torch
from torch import nn

from dynamics import inputs
from dynamics.inputs import Inputs, OutputSelector
from dynamics.models.layers import eval_mode
from dynamics.ntk import budget
from dynamics.ntk.rows import choose_backend, make_rows, trained_tensors


def _plan(model: nn.Module, x: Inputs, output: OutputSelector, memory: int):
    cost = budget.measure(model, x, output)
    chunk, block = budget.jc_plan(cost, inputs.n_samples(x), 0, False, memory)   # rows of x once: no pairs
    rows = make_rows(model, output, choose_backend(model, x, output, "auto"))
    return rows, cost.n_out, chunk, block


def jacobian_times(model: nn.Module, x: Inputs, tangents: dict[str, torch.Tensor], output: OutputSelector = None,
                   max_memory: int | None = None) -> torch.Tensor:
    """J u, shape (N, O), for u = ``tangents`` (trained parameter name → tensor of its shape); eval mode."""
    memory = budget.check_memory(max_memory)
    with eval_mode(model), torch.enable_grad():
        rows, n_out, chunk, block = _plan(model, x, output, memory)
        pieces = []
        for _, _, part in inputs.chunks(x, chunk):
            blocks = []
            for start in range(0, n_out, block):
                r = rows(part, slice(start, min(start + block, n_out)))
                blocks.append(sum(j @ tangents[name].reshape(-1).to(j.dtype) for name, j in r.items()))
            pieces.append(torch.cat(blocks, dim=1))
    return torch.cat(pieces).detach()


def jacobian_transpose_times(model: nn.Module, x: Inputs, cotangent: torch.Tensor, output: OutputSelector = None,
                             max_memory: int | None = None) -> dict[str, torch.Tensor]:
    """Jᵀ c for c = ``cotangent`` (N, O): trained parameter name → tensor of its shape; eval mode."""
    memory = budget.check_memory(max_memory)
    trained = trained_tensors(model)
    total = {name: torch.zeros_like(p) for name, p in trained.items()}
    with eval_mode(model), torch.enable_grad():
        rows, n_out, chunk, block = _plan(model, x, output, memory)
        for start, stop, part in inputs.chunks(x, chunk):
            for o in range(0, n_out, block):
                o_stop = min(o + block, n_out)
                weights = cotangent[start:stop, o:o_stop].to(total[next(iter(total))].dtype)
                for name, j in rows(part, slice(o, o_stop)).items():
                    total[name] += torch.einsum("nb,nbp->p", weights, j).reshape(total[name].shape)
    return total
