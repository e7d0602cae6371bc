"""Which implementation computes an empirical NTK, and with which chunks (``empirical_ntk(method=...)``).

- "structured": per-layer Grams (:mod:`dynamics.ntk.structured`), when its preconditions hold.
- "jacobian": Jacobian contraction with torch.func rows (:mod:`dynamics.ntk.generic`).
- "ntvp": NTK-vector products (:mod:`dynamics.ntk.ntvp`).
- "autograd": Jacobian contraction with plain-autograd rows (:mod:`dynamics.ntk.rows`): activation
  checkpointing, GRUs, anything torch.func cannot transform.
- "auto": "structured" when it applies; otherwise, when torch.func can transform the model, the cheaper
  of "jacobian" and "ntvp" by the cost model of :mod:`dynamics.ntk.budget` (forward flops and saved
  activations measured on one sample — deterministic, no clocks; "ntvp" only where forward-mode AD
  works for the model), and "autograd" where torch.func cannot transform it.

Every path's working memory is bounded by the budget ``max_memory`` (chunks of samples, then of
outputs); the result itself is not part of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from dynamics import inputs
from dynamics.inputs import Inputs, OutputSelector
from dynamics.ntk import budget
from dynamics.ntk.blocks import assemble_kernel
from dynamics.ntk.generic import jacobian_kernel
from dynamics.ntk.ntvp import ntvp_kernel, ntvp_refusal
from dynamics.ntk.rows import choose_backend, make_rows
from dynamics.ntk.structured import (StructuredUnsupported, contract_features, layer_features, static_problem,
                                     structured_sample_bytes, trained_layers)

METHODS = ("auto", "structured", "jacobian", "ntvp", "autograd")
#: Samples of x1 on which every path first checks that the model takes the inputs and returns one
#: row per input (per-sample paths cannot see a model that mixes samples).
PROBE_SAMPLES = 4


def _structured(model: nn.Module, x1: Inputs, x2: Inputs | None, trace: bool, chunk_size: int | None,
                output: OutputSelector, n_out: int, memory: int) -> torch.Tensor | str:
    """The structured kernel, or why the structured path cannot serve the model (a message)."""
    problem = static_problem(model)
    if problem is not None:
        return problem
    layers = trained_layers(model)
    n_max = max(inputs.n_samples(x1), 0 if x2 is None else inputs.n_samples(x2))
    if chunk_size is None:
        cost = budget.measure(model, x1, output)
        per_sample = structured_sample_bytes(layers, n_out, cost.activations, cost.itemsize)
        chunk_size = max(1, min(n_max, memory // max(1, 2 * per_sample)))
    try:  # layer_features verifies the structured preconditions on every chunk it is given
        return assemble_kernel(partial(layer_features, model, layers, output=output),
                               partial(contract_features, trace=trace), x1, x2, chunk_size)
    except StructuredUnsupported as error:
        return str(error)
    except (RuntimeError, NotImplementedError) as error:   # e.g. a reentrant checkpoint refuses autograd.grad
        return f"its batched reverse pass failed ({type(error).__name__}: {str(error).splitlines()[0]})"


@dataclass(frozen=True)
class Plan:
    """How a generic kernel is computed: ``method`` ("jacobian", "ntvp" or "autograd"), the rows'
    ``backend``, and its chunks (JC: ``chunk`` samples × ``block`` outputs; NTVP: ``chunk1`` x1 samples,
    ``chunk2`` x2 samples × ``block`` outputs), with the cost model's estimates (flop-equivalents)."""

    method: str
    backend: str
    chunk: int
    block: int
    chunk1: int = 0
    chunk2: int = 0
    jc_cost: float = 0.0
    ntvp_cost: float = 0.0


def plan(model: nn.Module, x1: Inputs, x2: Inputs | None, trace: bool, method: str, chunk_size: int | None,
         output: OutputSelector, memory: int) -> Plan:
    """The generic path for ``method`` ("auto", "jacobian", "ntvp", "autograd"; module docstring)."""
    cost = budget.measure(model, x1, output)
    n1 = inputs.n_samples(x1)
    n2 = None if x2 is None else inputs.n_samples(x2)
    if method == "ntvp":
        refusal = ntvp_refusal(model, x1, output)
        if refusal is not None:
            raise ValueError(f"method='ntvp' uses torch.func's vjp and jvp (forward-mode AD), which cannot "
                             f"differentiate {type(model).__name__}: {type(refusal).__name__}: "
                             f"{str(refusal).splitlines()[0]}; use method='jacobian', 'autograd' or 'auto'") from refusal
    backend = "func" if method == "ntvp" else choose_backend(model, x1, output, method)
    chunk, block = budget.jc_plan(cost, n1, n2, trace, memory, chunk_size)
    c1, c2, b = budget.ntvp_plan(cost, n1, n2 or n1, memory)
    costs = dict(jc_cost=budget.jc_cost(cost, n1, n2, trace, chunk, block), ntvp_cost=budget.ntvp_cost(cost, n1, n2))
    if method == "ntvp" or (method == "auto" and backend == "func" and costs["ntvp_cost"] < costs["jc_cost"]
                            and ntvp_refusal(model, x1, output) is None):
        return Plan("ntvp", "func", chunk, b, c1, chunk_size or c2, **costs)
    return Plan("autograd" if backend == "autograd" else "jacobian", backend, chunk, block, **costs)


def compute(model: nn.Module, x1: Inputs, x2: Inputs | None, trace: bool, method: str, chunk_size: int | None,
            output: OutputSelector, memory: int) -> torch.Tensor:
    """Θ by ``method`` (module docstring); the model in eval mode, grad enabled, inputs prepared."""
    with torch.no_grad():
        n_out = inputs.first_outputs(model, x1, output, "x1", min(PROBE_SAMPLES, chunk_size or PROBE_SAMPLES)).shape[1]
    if method in ("auto", "structured"):
        result = _structured(model, x1, x2, trace, chunk_size, output, n_out, memory)
        if isinstance(result, torch.Tensor):
            return result
        if method == "structured":
            raise ValueError(f"method='structured' cannot compute the NTK of {type(model).__name__}: {result}; "
                             "use method='jacobian' (or 'auto')")
    how = plan(model, x1, x2, trace, method, chunk_size, output, memory)
    if how.method == "ntvp":
        return ntvp_kernel(model, output, x1, x2, trace, n_out, how.chunk1, how.chunk2, how.block)
    return jacobian_kernel(make_rows(model, output, how.backend), x1, x2, trace, n_out, how.chunk, how.block)
