"""Empirical NTK of any model by NTK-vector products: kernel columns from a vjp and a jvp, never a Jacobian.

A column of the kernel is Θ[:, m, :, o] = J(x1) J(x2_m)_oᵀ: the row u = J(x2_m)_o = ∂f_o(x2_m)/∂θ is one
vector-Jacobian product (``torch.func.vjp`` of the outputs of a chunk of x2 with a one-hot cotangent),
and J(x1) u one Jacobian-vector product (``torch.func.jvp`` through a chunk of x1). Blocks of columns
are batched with ``vmap``; the traced kernel keeps Σ_o Θ[n, m, o, o]. The working memory is a block of
rows (t × P) and the jvp's activations — no (N, O, P) Jacobian — and the cost is N2·O products
through x1 (Novak et al. 2022, "Fast finite width neural tangent kernel", NTK-vector products).
Block sizes come from :func:`dynamics.ntk.budget.ntvp_plan`; a kernel of x1 with itself is averaged
with its transpose, so it is exactly symmetric.

Forward-mode AD is not available for every operation (CPU flash attention, the native kernel of
``nn.MultiheadAttention``, activation checkpointing); :func:`ntvp_refusal` tells, on one column,
whether this path can serve a model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import jvp, vjp, vmap

from dynamics import functional, inputs
from dynamics.inputs import Inputs, OutputSelector
from dynamics.ntk.rows import FUNC_LIMITS, trained_tensors


def _outputs_fn(model: nn.Module, output: OutputSelector, slots: dict[str, str], x: Inputs):
    n = inputs.n_samples(x)

    def f(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional.call(model, params, x, output, slots).reshape(n, -1)
    return f


def ntvp_kernel(model: nn.Module, output: OutputSelector, x1: Inputs, x2: Inputs | None, trace: bool,
                n_out: int, chunk1: int, chunk2: int, block: int) -> torch.Tensor:
    """Θ (N1, N2) traced or (N1, N2, O, O) by columns: x2 in chunks of ``chunk2`` samples × ``block``
    outputs (one vjp each, vmapped), x1 in chunks of ``chunk1`` samples (one jvp per column, vmapped)."""
    trained = trained_tensors(model)
    slots = functional.parameter_slots(model)
    other = x1 if x2 is None else x2
    n1, n2 = inputs.n_samples(x1), inputs.n_samples(other)
    result = None
    with torch.enable_grad():
        for start2, stop2, part2 in inputs.chunks(other, chunk2):
            c2 = stop2 - start2
            _, pull = vjp(_outputs_fn(model, output, slots, part2), trained)
            for o_start in range(0, n_out, block):
                o_stop = min(o_start + block, n_out)
                b = o_stop - o_start
                cotangents = torch.zeros((c2, b, c2, n_out), dtype=next(iter(trained.values())).dtype,
                                         device=next(iter(trained.values())).device)
                index = torch.arange(c2)
                for k in range(b):
                    cotangents[index, k, index, o_start + k] = 1
                (rows,) = vmap(pull)(cotangents.reshape(c2 * b, c2, n_out))   # name → (t, *shape)
                for start1, stop1, part1 in inputs.chunks(x1, chunk1):
                    f1 = _outputs_fn(model, output, slots, part1)
                    cols = vmap(lambda u: jvp(f1, (trained,), (u,))[1])(rows)        # (t, c1, O)
                    cols = cols.reshape(c2, b, stop1 - start1, n_out).detach()
                    if result is None:
                        shape = (n1, n2) if trace else (n1, n2, n_out, n_out)
                        result = cols.new_zeros(shape)
                    if trace:   # Θ[n, m] += Σ_{o in block} cols[m, o, n, o]
                        diag = torch.diagonal(cols[:, :, :, o_start:o_stop], dim1=1, dim2=3)  # (c2, c1, b)
                        result[start1:stop1, start2:stop2] += diag.sum(-1).T
                    else:       # Θ[n, m, p, o] = cols[m, o, n, p]
                        result[start1:stop1, start2:stop2, :, o_start:o_stop] = cols.permute(2, 0, 3, 1)
    if x2 is None:
        result = (result + (result.T if trace else result.permute(1, 0, 3, 2))) / 2
    return result


def ntvp_refusal(model: nn.Module, x: Inputs, output: OutputSelector) -> BaseException | None:
    """None when one kernel column of one sample can be computed (a vjp and a jvp); otherwise the error."""
    trained = trained_tensors(model)
    try:
        with torch.enable_grad():
            f = _outputs_fn(model, output, functional.parameter_slots(model), inputs.rows(x, 0, 1))
            out, pull = vjp(f, trained)
            (row,) = pull(torch.ones_like(out))
            jvp(f, (trained,), (row,))
    except FUNC_LIMITS as error:
        return error
    return None
