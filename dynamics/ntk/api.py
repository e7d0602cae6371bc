"""``empirical_ntk``: one quantity, several implementations behind ``method=`` (as in neural-tangents)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from dynamics import inputs
from dynamics.inputs import Inputs, OutputSelector
from dynamics.models.layers import eval_mode
from dynamics.ntk import budget
from dynamics.ntk.paths import METHODS, Plan, compute, plan
from dynamics.ntk.structured import structured_problem
from dynamics.wrappers import unwrap_model


def _check_options(trace: object, method: object, chunk_size: object, dtype: object) -> None:
    if not isinstance(trace, bool):
        raise TypeError(f"trace must be True or False, got {trace!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise TypeError(f"chunk_size must be None or an int, got {chunk_size!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be None or a floating torch.dtype, got {dtype!r}")


def ntk_dtype(model: nn.Module) -> torch.dtype:
    """The dtype :func:`empirical_ntk` computes in for ``dtype=None``: the trained parameters' dtype, but
    float32 for a float16/bfloat16 model (a float32 copy of it; sums of many products in half precision
    lose every digit). float32 for a model without trained parameters."""
    first = next((p for p in model.parameters() if p.requires_grad), None)
    if first is None or first.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return first.dtype


def empirical_ntk(model: nn.Module, x1: Inputs, x2: Inputs | None = None, *, trace: bool = True,
                  method: str = "auto", chunk_size: int | None = None,
                  dtype: torch.dtype | None = None, output: OutputSelector = None,
                  max_memory: int | None = None) -> torch.Tensor:
    """Empirical neural tangent kernel Θ(x1, x2) = J(x1) J(x2)ᵀ of ``model`` (Jacot et al. 2018).

    J is the Jacobian of the model's outputs, flattened after the sample dimension to O numbers
    per sample, with respect to its *trained* parameters (requires_grad=True; frozen parameters and
    buffers are constants). Full kernel Θ[n, m, o, p] = Σ_θ ∂f_o(x1_n)/∂θ · ∂f_p(x2_m)/∂θ, shape
    (N1, N2, O, O); with ``trace=True`` the trace over outputs Σ_o Θ[n, m, o, o], shape (N1, N2).

    Convention: ``trace=True`` is the **sum** over the O outputs. neural-tangents'
    ``empirical_ntk_fn(..., trace_axes=(-1,))`` returns the **mean** over outputs (the trace
    divided by O): divide this result by O to compare with it. The full kernel (``trace=False``)
    is the same quantity in both.

    Methods:
        "structured": per-layer Gram products (layer-input Gram × output-gradient Gram, see
            :mod:`dynamics.ntk.structured`; for a Conv2d the Gram of its own per-sample Jacobians from
            its unfolded input, :mod:`dynamics.ntk.conv`), never the P-wide Jacobian; only for models
            whose trained parameters all belong to plain nn.Linear or nn.Conv2d (groups=1, zero
            padding) layers run at most once per forward pass on one row (image) per sample and used
            nowhere else. These preconditions are verified on every chunk
            of x1 and of x2 the kernel is built from (in-place operations after a layer are
            harmless: the layer's recorded output is never the tensor they modify); a model that
            breaks one on any chunk raises ValueError saying why — never a wrong kernel.
        "jacobian": per-sample Jacobian rows (torch.func ``vmap(jacrev)``) contracted parameter by
            parameter (:mod:`dynamics.ntk.generic`), chunked over samples and outputs.
        "ntvp": kernel columns from NTK-vector products, a vjp and a jvp per column, never a Jacobian
            (:mod:`dynamics.ntk.ntvp`); needs forward-mode AD for every operation of the model.
        "autograd": the Jacobian contraction with rows from plain autograd (one forward per sample,
            one ``autograd.grad`` per output; :mod:`dynamics.ntk.rows`): for models torch.func cannot
            transform — activation checkpointing (``torch.utils.checkpoint``, reentrant or not),
            ``nn.GRU``/``nn.LSTM``, data-dependent control flow.
        "auto": "structured" when the model's modules allow it and every chunk passes the checks;
            otherwise, where torch.func can transform the model, the cheaper of "jacobian" and "ntvp"
            by the cost model of :mod:`dynamics.ntk.budget` (forward flops and saved activations
            counted on one sample; no clocks, so the same call always takes the same path), and
            "autograd" where it cannot. "jacobian" and "ntvp" on a model they cannot differentiate
            raise ValueError naming torch.func's limitation and the method that works.

    Memory: the working memory besides the result (rows, activations, features of two chunks) is
    kept within ``max_memory`` bytes by chunking samples and, when one sample's rows over all O
    outputs do not fit, outputs (:mod:`dynamics.ntk.budget`). The result holds N1·N2 (traced) or
    N1·N2·O² numbers; an exactly symmetric kernel needs no second copy of it.

    Wrappers (``torch.compile``'s ``OptimizedModule``, DDP, FSDP, Lightning's) are unwrapped first
    (:func:`dynamics.wrappers.unwrap_model`): the kernel is that of the network inside, computed
    eagerly, without collective operations.

    Evaluation: always in **eval mode** (dropout off, batch-norm running statistics), which makes
    f a deterministic per-sample function; every sub-module's train/eval flag is restored
    afterwards. Parameters, their ``.grad`` and the autograd state of the caller are left untouched
    (works inside ``torch.no_grad``/``inference_mode``).

    Args:
        model: the network; its forward maps N input samples to outputs with one row per sample.
        x1: what the model's forward takes (:mod:`dynamics.inputs`): a tensor (N1, ...), a tuple of
            tensors (positional arguments) or a dict of tensors (keyword arguments), floating or
            integer (token ids) or bool, every leaf with N1 rows. x2: the same structure with N2
            rows and the same per-sample shapes, or None for x2 = x1, in which case Θ is computed once
            per pair of samples and returned exactly symmetric. Both are detached and moved to the
            trained parameters' device; floating leaves are cast to the compute dtype.
        trace: return the (N1, N2) trace over outputs instead of (N1, N2, O, O).
        method: "auto", "structured", "jacobian", "ntvp" or "autograd" (above).
        chunk_size: samples per chunk (None: the largest chunk that fits ``max_memory``); at most two
            chunks' features are held at once.
        dtype: compute in this floating dtype. When the model's parameters or buffers have another
            dtype, a deep copy of the model cast with ``.to(dtype)`` is used (the model itself is not
            touched); None → :func:`ntk_dtype`: the trained parameters' dtype, float32 for a
            float16/bfloat16 model.
        output: which output is differentiated when the forward returns more than a tensor
            (:func:`dynamics.inputs.select_output`: None → a mapping's ``"logits"``, a tuple's first
            element; or a key, an index, a callable).
        max_memory: bytes of working memory (None: :data:`dynamics.ntk.budget.DEFAULT_MEMORY`, 512 MiB).

    Returns:
        Θ, a tensor (N1, N2) or (N1, N2, O, O) of the compute dtype on the parameters' device.

    Raises:
        TypeError / ValueError: bad arguments (named in the message); ValueError for a method that
            cannot serve the model (why, and which method can), and for a model that does not return
            one row per input sample. The model's own error on the inputs (a shape or dtype it cannot
            take) is raised from the first forward pass with a note naming the inputs.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = unwrap_model(model)   # torch.compile, DDP, ...: the network itself (dynamics.wrappers)
    x1 = inputs.check_inputs(x1, "x1")
    if x2 is not None:
        inputs.check_compatible(x1, inputs.check_inputs(x2, "x2"))
    _check_options(trace, method, chunk_size, dtype)
    inputs.check_selector(output)
    memory = budget.check_memory(max_memory)
    trained = [p for p in model.parameters() if p.requires_grad]
    if not trained:
        raise ValueError(f"{type(model).__name__} has no parameters with requires_grad=True; the NTK is undefined")
    tensors = list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]
    if dtype is None and ntk_dtype(model) != trained[0].dtype:   # a half-precision model: a float32 copy
        dtype = ntk_dtype(model)
    if dtype is not None and any(t.is_floating_point() and t.dtype != dtype for t in tensors):
        model = copy.deepcopy(model).to(dtype)
        trained = [p for p in model.parameters() if p.requires_grad]
    x1 = inputs.prepare(x1, trained[0].device, trained[0].dtype)
    x2 = None if x2 is None else inputs.prepare(x2, trained[0].device, trained[0].dtype)
    with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        return compute(model, x1, x2, trace, method, chunk_size, output, memory)


def ntk_plan(model: nn.Module, x1: Inputs, x2: Inputs | None = None, *, trace: bool = True, method: str = "auto",
             chunk_size: int | None = None, output: OutputSelector = None, max_memory: int | None = None) -> Plan:
    """How :func:`empirical_ntk` computes a kernel: the method ("structured", "jacobian", "ntvp" or
    "autograd"), the rows' backend, the chunks and the cost model's estimates
    (:class:`dynamics.ntk.paths.Plan`; for "structured" only the method is meaningful, and its
    preconditions are checked on the whole of x1 here, as one chunk). Same arguments as
    :func:`empirical_ntk`."""
    model = unwrap_model(model)
    x1 = inputs.check_inputs(x1, "x1")
    like = next(p for p in model.parameters() if p.requires_grad)
    x1 = inputs.prepare(x1, like.device, like.dtype)
    x2 = None if x2 is None else inputs.prepare(inputs.check_inputs(x2, "x2"), like.device, like.dtype)
    with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        if method in ("auto", "structured") and structured_problem(model, x1, output) is None:
            return Plan("structured", "autograd", inputs.n_samples(x1), 0)
        return plan(model, x1, x2, trace, method, chunk_size, output, budget.check_memory(max_memory))
