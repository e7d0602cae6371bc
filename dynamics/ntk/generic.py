"""Empirical NTK of any model by Jacobian contraction, chunked over samples and outputs to a budget.

For a chunk of c samples and a block B of output indices, the Jacobian rows J_k[n, o, :] (o ∈ B) of
every trained parameter k come from :mod:`dynamics.ntk.rows` (torch.func or plain autograd). Two
chunks' rows are contracted as

    Θ[n, m, o, p] = Σ_k Σ_i J_k[n, o, i] J_k[m, p, i]        (traced: Σ_o Θ[n, m, o, o]),

one parameter at a time (a (c·b, P_k) × (P_k, c'·b) product, cut into blocks along P_k for
accuracy, :func:`dynamics.ntk.blocks.row_gram`), so at most two chunks' rows are alive at once. The
traced kernel sums over output blocks; the full kernel fills every pair of output blocks. Chunk and
block sizes come from :func:`dynamics.ntk.budget.jc_plan`. This is the reference the structured path
is tested against (neural-tangents' "jacobian contraction", Novak et al. 2022).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dynamics import inputs
from dynamics.inputs import Inputs
from dynamics.ntk.blocks import assemble_kernel, row_gram

Rows = Callable[[Inputs, slice], dict[str, torch.Tensor]]


def contract_jacobians(j1: dict[str, torch.Tensor], j2: dict[str, torch.Tensor], trace: bool) -> torch.Tensor:
    """Θ block (c1, c2) traced over outputs, or (c1, c2, b1, b2): Σ_k J1_k J2_kᵀ."""
    total = None
    for name, a in j1.items():
        b = j2[name]
        c1, n_out, _ = a.shape
        c2, n_out2, _ = b.shape
        if trace:
            block = row_gram(a.reshape(c1, -1), b.reshape(c2, -1))
        else:
            block = row_gram(a.reshape(c1 * n_out, -1), b.reshape(c2 * n_out2, -1))
            block = block.reshape(c1, n_out, c2, n_out2).permute(0, 2, 1, 3)
        total = block if total is None else total + block
    return total.contiguous()


def jacobian_kernel(rows: Rows, x1: Inputs, x2: Inputs | None, trace: bool, n_out: int, chunk: int,
                    block: int) -> torch.Tensor:
    """Θ (N1, N2) traced or (N1, N2, O, O) from ``rows`` in sample chunks of ``chunk`` and output
    blocks of ``block`` (x2=None: x2 = x1, symmetric)."""
    blocks = [slice(start, min(start + block, n_out)) for start in range(0, n_out, block)]
    if len(blocks) == 1:
        return assemble_kernel(lambda x: rows(x, blocks[0]), lambda a, b: contract_jacobians(a, b, trace),
                               x1, x2, chunk)
    if trace:   # Σ over output blocks of each block's traced kernel
        total = None
        for b in blocks:
            part = assemble_kernel(lambda x, b=b: rows(x, b), lambda u, v: contract_jacobians(u, v, True),
                                   x1, x2, chunk)
            total = part if total is None else total.add_(part)
        return total
    n1 = inputs.n_samples(x1)
    n2 = n1 if x2 is None else inputs.n_samples(x2)
    result = None
    for i, b1 in enumerate(blocks):
        for j, b2 in enumerate(blocks):
            if x2 is None and j < i:   # Θ[:, :, b2, b1] of a symmetric kernel is the transpose of [b1, b2]
                result[:, :, b1, b2] = result[:, :, b2, b1].permute(1, 0, 3, 2)
                continue
            if x2 is None and i == j:
                part = assemble_kernel(lambda x, b=b1: rows(x, b), lambda u, v: contract_jacobians(u, v, False),
                                       x1, None, chunk)
            else:
                part = _cross_blocks(rows, x1, x1 if x2 is None else x2, b1, b2, chunk)
            if result is None:
                result = part.new_empty((n1, n2, n_out, n_out))
            result[:, :, b1, b2] = part
    return result


def _cross_blocks(rows: Rows, x1: Inputs, x2: Inputs, b1: slice, b2: slice, chunk: int) -> torch.Tensor:
    """Θ[:, :, b1, b2] for two different output blocks (no symmetry to use)."""
    pieces = []
    for _, _, part1 in inputs.chunks(x1, chunk):
        r1 = rows(part1, b1)
        pieces.append(torch.cat([contract_jacobians(r1, rows(part2, b2), False)
                                 for _, _, part2 in inputs.chunks(x2, chunk)], dim=1))
    return torch.cat(pieces, dim=0)
