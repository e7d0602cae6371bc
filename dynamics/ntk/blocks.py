"""Assemble a kernel matrix block by block from per-chunk features.

The NTK paths reduce to the same loop: compute some per-sample features for a chunk of inputs
(layer activations and output-gradients, or a chunk's Jacobian), contract two chunks' features into
a block Θ[i-chunk, j-chunk], and write it into the result. Only two chunks' features are alive at a
time, so memory is bounded by ``chunk_size`` besides the (N1, N2[, O, O]) result itself. When the
kernel is symmetric (no ``x2``), only blocks on or above the diagonal are computed, the others are
their transposes, and each diagonal block is symmetrised exactly, so the result is exactly symmetric
without a second (N1, N2[, O, O]) copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from dynamics import inputs
from dynamics.inputs import Inputs

Features = TypeVar("Features")

#: Longest inner dimension multiplied in one matmul by :func:`row_gram`.
GRAM_BLOCK = 2 ** 16


def row_gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a bᵀ for a (m, K), b (n, K), accurate also for a very long K in low precision.

    CPU matmuls with few rows accumulate a long K almost sequentially (measured in float32:
    relative error 2e-3 for m = n = 2, K = 3.1e7, against 9e-7 for K = 1e5), so K is cut into
    blocks of at most :data:`GRAM_BLOCK` whose products are summed in float64 (when the inputs are
    of lower precision) and the result is cast back to the input dtype.
    """
    if a.shape[1] <= GRAM_BLOCK:
        return a @ b.T
    total = a.new_zeros((a.shape[0], b.shape[0]), dtype=torch.promote_types(a.dtype, torch.float64))
    for start in range(0, a.shape[1], GRAM_BLOCK):
        total += a[:, start:start + GRAM_BLOCK] @ b[:, start:start + GRAM_BLOCK].T
    return total.to(a.dtype)


def _transpose_block(block: torch.Tensor) -> torch.Tensor:
    """Θ(x', x) from Θ(x, x'): swap the sample axes and, when present, the output axes."""
    return block.transpose(0, 1) if block.dim() == 2 else block.permute(1, 0, 3, 2)


def assemble_kernel(features: Callable[[Inputs], Features],
                    contract: Callable[[Features, Features], torch.Tensor],
                    x1: Inputs, x2: Inputs | None, chunk_size: int) -> torch.Tensor:
    """Θ (N1, N2, ...) with Θ[i:j, k:l] = contract(features(x1[i:j]), features(x2[k:l])).

    ``x2=None`` means x2 = x1 and a symmetric result (Θ[m, n] = Θ[n, m] with output axes swapped).
    Each outer chunk's features are computed once; inner ones are recomputed per outer chunk
    unless one chunk covers everything.
    """
    symmetric = x2 is None
    other = x1 if symmetric else x2
    n1, n2 = inputs.n_samples(x1), inputs.n_samples(other)
    result: torch.Tensor | None = None
    inner_cache: dict[int, Features] = {}
    reuse_inner = n2 <= chunk_size  # one inner chunk: compute it once
    for start1 in range(0, n1, chunk_size):
        stop1 = min(start1 + chunk_size, n1)
        outer = features(inputs.rows(x1, start1, stop1))
        for start2 in range(0, n2, chunk_size):
            if symmetric and start2 < start1:
                continue
            stop2 = min(start2 + chunk_size, n2)
            if symmetric and start2 == start1:
                inner = outer
            elif reuse_inner:
                if start2 not in inner_cache:
                    inner_cache[start2] = features(inputs.rows(other, start2, stop2))
                inner = inner_cache[start2]
            else:
                inner = features(inputs.rows(other, start2, stop2))
            block = contract(outer, inner)
            if symmetric and start2 == start1:   # Θ(x, x) of one chunk: exactly symmetric
                block = (block + _transpose_block(block)) / 2
            if result is None:
                result = block.new_empty((n1, n2) + tuple(block.shape[2:]))
            result[start1:stop1, start2:stop2] = block
            if symmetric and start2 > start1:
                result[start2:stop2, start1:stop1] = _transpose_block(block)
            del inner
    assert result is not None  # n1 >= 1 is validated by the caller
    return result
