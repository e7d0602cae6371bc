"""Memory budget and cost model of the generic NTK paths (Jacobian contraction and NTK-vector products).

A model is measured once on one sample, deterministically (no clocks): ``flops`` — the forward
pass's floating-point operations counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix
products, convolutions, attention) — and ``saved`` — the bytes autograd saves for the backward pass
(``torch.autograd.graph.saved_tensors_hooks``), the per-sample activation memory. With P trained
numbers, O outputs per sample, s bytes per number and N1 × N2 samples:

Jacobian contraction (JC, :mod:`dynamics.ntk.generic`), chunks of c samples and blocks of b outputs:
    working memory  M_JC(c, b) = 2·c·b·P·s (two chunks' rows) + 2·c·saved (the chunk's pass)
    cost            rows:   (chunk evaluations) · c · 2·(FORWARD_FACTOR + b) · flops · PASS_FACTOR
                    + contraction: 2·N1·N2·O·P (traced) or 2·N1·N2·O²·P (full kernel)
NTK-vector products (NTVP, :mod:`dynamics.ntk.ntvp`), t = c2·b columns Θ[:, (m, o)] = J(x1)·J[m, o]ᵀ
per block, each by one vjp (row J[m, o]) and one jvp through a chunk of c1 samples:
    working memory  M_NTVP = t·P·s + c1·t·(saved + O·s) + c2·saved
    cost            N2·O·(2 + 3·N1)·flops · PASS_FACTOR

:data:`PASS_FACTOR` is the measured cost of a flop of a one-sample forward/backward pass relative to a
flop of a large matrix product (``benchmarks/ntk.py`` measures both paths; docs/benchmarks.md).
Chunks are those of the lowest estimated cost whose working memory fits the budget (``max_memory``,
default :data:`DEFAULT_MEMORY`): chunks of samples (the inner chunks' rows are recomputed for every
outer chunk) or blocks of outputs (forward passes are repeated per block), whichever costs less. The result itself —
N1·N2 numbers traced, N1·N2·O² full — is not part of the working budget; :func:`kernel_bytes` gives
it and :func:`probe_memory` the whole of a Recorder checkpoint's NTK.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dynamics import inputs
from dynamics.inputs import Inputs, OutputSelector

#: Default bound (bytes) on the working memory of a generic NTK computation, besides its result.
DEFAULT_MEMORY = 2 ** 29
#: Time of a counted flop of a forward/backward pass relative to a flop of the contraction's matrix
#: products (small, latency-bound operations, and elementwise work the counter does not see). Fitted to
#: benchmarks/ntk.py (docs/benchmarks.md): 24 from the MLP with 64 outputs, where both paths took about
#: the same time, 44 from the one with 256; it puts the choice on the faster side in every case measured.
PASS_FACTOR = 24.0
#: A chunk's forward pass in units of one output's backward pass (2·flops): the vmapped backward over a
#: block of outputs is one batched pass, while every block repeats the forward and the transforms'
#: per-call work. Fitted to benchmarks/ntk.py's transformer (chunks of 32 samples × 10 outputs against
#: 64 × 1: 9.7 s against 17 s).
FORWARD_FACTOR = 3.5
#: Flops charged per pass at least (per-operation overhead of tiny models).
MIN_FLOPS = 2 ** 14


@dataclass(frozen=True)
class ModelCost:
    """One sample of a model: forward flops, bytes saved for backward (``saved``: every tensor
    autograd saves, the model's own weights included; ``activations``: only those that are not the
    model's parameters or buffers, i.e. what one more sample adds), trained numbers P, outputs O,
    bytes per number s."""

    flops: int
    saved: int
    n_params: int
    n_out: int
    itemsize: int
    activations: int = 0


def measure(model: nn.Module, x: Inputs, output: OutputSelector) -> ModelCost:
    """:class:`ModelCost` of ``model`` from one forward pass on the first sample of ``x`` (grad enabled,
    eval mode is the caller's).

    The generic paths' memory model (module docstring) uses ``saved``, which also counts the weights a
    layer saves for its backward: measured against the peak memory of ``benchmarks/ntk.py``, that
    surplus covers the vmapped passes' temporaries the formula leaves out (with ``activations``
    instead the transformer's plan peaked at 636 MiB for a 512 MiB budget). The structured path uses
    ``activations`` (:func:`dynamics.ntk.structured.structured_sample_bytes`): it holds one batched
    pass per chunk, and counting the shared weights once per sample made its chunks ~20× too small
    (RevMLP(40, 1024, 3, 10): 862 kB instead of 41 kB per sample; 15 feature passes instead of 1)."""
    saved, activations = [0], [0]
    shared = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers()) if t.numel()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        size = t.numel() * t.element_size()
        saved[0] += size
        if not (t.numel() and t.untyped_storage().data_ptr() in shared):
            activations[0] += size
        return t

    trained = [p for p in model.parameters() if p.requires_grad]
    with torch.enable_grad(), FlopCounterMode(display=False) as counter, \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = inputs.outputs(model, inputs.rows(x, 0, 1), output)
    return ModelCost(flops=max(int(counter.get_total_flops()), MIN_FLOPS), saved=saved[0],
                     n_params=sum(p.numel() for p in trained), n_out=out.shape[1],
                     itemsize=trained[0].element_size(), activations=activations[0])


def check_memory(max_memory: object) -> int:
    """``max_memory`` (bytes) as an int ≥ 1, :data:`DEFAULT_MEMORY` for None; TypeError/ValueError."""
    if max_memory is None:
        return DEFAULT_MEMORY
    if isinstance(max_memory, bool) or not isinstance(max_memory, int):
        raise TypeError(f"max_memory must be None or a number of bytes (int), got {max_memory!r}")
    if max_memory < 1:
        raise ValueError(f"max_memory must be >= 1 byte, got {max_memory}")
    return max_memory


def jc_memory(cost: ModelCost, chunk: int, block: int, chunks: int = 2) -> int:
    """M_JC(c, b) in bytes (module docstring); ``chunks``: how many chunks' rows are alive at once (1 when
    a symmetric kernel's samples fit one chunk)."""
    return chunks * chunk * block * cost.n_params * cost.itemsize + 2 * chunk * cost.saved


def _candidates(n: int) -> list[int]:
    """n, and the powers of two below it."""
    out, k = {n}, 1
    while k < n:
        out.add(k)
        k *= 2
    return sorted(out, reverse=True)


def jc_plan(cost: ModelCost, n1: int, n2: int | None, trace: bool, budget: int,
            chunk_size: int | None = None) -> tuple[int, int]:
    """(c, b): the sample chunk c and output block b of the Jacobian contraction with the lowest
    :func:`jc_cost` among those whose working memory :func:`jc_memory` fits ``budget`` (c from
    ``chunk_size`` when given; ties: the larger c, then the larger b). Chunking samples recomputes
    the inner chunks' rows for every outer chunk; chunking outputs repeats forward passes: which costs
    less depends on the model. When nothing fits, (1, 1)."""
    n_max = max(n1, n2 or 0)
    chunks = [min(chunk_size, n_max)] if chunk_size is not None else _candidates(n_max)
    best = None
    for c in chunks:
        alive = 1 if n2 is None and c >= n1 else 2
        for b in _candidates(cost.n_out):
            if jc_memory(cost, c, b, alive) > budget:
                continue
            key = (jc_cost(cost, n1, n2, trace, c, b), -c, -b)
            if best is None or key < best[0]:
                best = (key, c, b)
    return (chunks[-1], 1) if best is None else (best[1], best[2])


def _chunk_evaluations(n1: int, n2: int | None, chunk: int) -> int:
    """Chunk feature evaluations of :func:`dynamics.ntk.blocks.assemble_kernel`."""
    c1 = -(-n1 // chunk)
    if n2 is None:
        return c1 if c1 == 1 else c1 + c1 * (c1 - 1) // 2
    c2 = -(-n2 // chunk)
    return c1 + (c2 if c2 == 1 else c1 * c2)


def jc_cost(cost: ModelCost, n1: int, n2: int | None, trace: bool, chunk: int, block: int) -> float:
    """Estimated cost (flop-equivalents) of the Jacobian contraction with chunks (c, b)."""
    blocks = -(-cost.n_out // block)
    pairs = blocks if trace else blocks * blocks
    evaluations = _chunk_evaluations(n1, n2, chunk) * pairs * chunk
    rows = evaluations * 2 * (FORWARD_FACTOR + block) * cost.flops * PASS_FACTOR
    width = cost.n_out if trace else cost.n_out ** 2
    return rows + 2.0 * n1 * (n1 if n2 is None else n2) * width * cost.n_params


def ntvp_plan(cost: ModelCost, n1: int, n2: int, budget: int) -> tuple[int, int, int]:
    """(c1, c2, b): x1 chunk c1, x2 chunk c2 and output block b of the NTK-vector products whose
    working memory (module docstring) fits ``budget``, preferring many columns per block."""
    def memory(c1: int, c2: int, b: int) -> int:
        t = c2 * b
        return t * cost.n_params * cost.itemsize + c1 * t * (cost.saved + cost.n_out * cost.itemsize) \
            + c2 * cost.saved
    c2, b = n2, cost.n_out
    while (c2 > 1 or b > 1) and memory(1, c2, b) > budget:
        if c2 > 1:
            c2 = max(1, c2 // 2)
        else:
            b = max(1, b // 2)
    c1 = n1
    while c1 > 1 and memory(c1, c2, b) > budget:
        c1 = max(1, c1 // 2)
    return c1, c2, b


def ntvp_cost(cost: ModelCost, n1: int, n2: int | None) -> float:
    """Estimated cost (flop-equivalents) of the NTK-vector products."""
    other = n1 if n2 is None else n2
    return other * cost.n_out * (2 + 3 * n1) * cost.flops * PASS_FACTOR


def kernel_bytes(n1: int, n2: int, n_out: int, trace: bool, itemsize: int) -> int:
    """Bytes of the result: N1·N2 (traced) or N1·N2·O² numbers."""
    return n1 * n2 * (1 if trace else n_out * n_out) * itemsize


def probe_memory(n: int, itemsize: int, budget: int = DEFAULT_MEMORY) -> int:
    """Peak bytes of a Recorder checkpoint's traced probe NTK of n samples: the kernel, its exact
    symmetrisation and its stored copy (3 · n² numbers) plus the working budget."""
    return 3 * n * n * itemsize + budget


def memory_text(n_bytes: float) -> str:
    """Bytes for messages: ``1.5 GiB``."""
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{int(n_bytes)} B"
