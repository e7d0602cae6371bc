"""``empirical_ntk``: one quantity, two implementations behind ``method=`` (as in neural-tangents)."""

from __future__ import annotations

import copy
from functools import partial

import torch
from torch import nn

from dynamics.models.layers import eval_mode
from dynamics.ntk.blocks import assemble_kernel
from dynamics.ntk.generic import contract_jacobians, default_chunk_size, jacobian_features, split_parameters
from dynamics.ntk.structured import (StructuredUnsupported, check_output, contract_features, layer_features,
                                     static_problem, trained_layers)

METHODS = ("auto", "structured", "jacobian")
#: Samples of x1 on which the jacobian path checks that the model returns one row per input.
PROBE_SAMPLES = 4


def _check_inputs(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"{name} needs a leading sample dimension with at least one sample, got shape {tuple(x.shape)}")
    return x


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


def _prepare(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """x detached, on the parameters' device and dtype, and never an inference-mode tensor."""
    x = x.detach()
    if x.is_inference():
        x = x.clone()
    return x.to(device=like.device, dtype=like.dtype)


def empirical_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None, *, trace: bool = True,
                  method: str = "auto", chunk_size: int | None = None,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
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
        "jacobian": torch.func per-sample Jacobians contracted parameter by parameter
            (:mod:`dynamics.ntk.generic`); any model that torch.func.vmap can batch.
        "auto": "structured" when the model's modules allow it and every chunk passes the checks;
            otherwise the whole kernel is computed with "jacobian".

    Evaluation: always in **eval mode** (dropout off, batch-norm running statistics), which makes
    f a deterministic per-sample function; every sub-module's train/eval flag is restored
    afterwards. Parameters, their ``.grad`` and the autograd state of the caller are left untouched
    (works inside ``torch.no_grad``/``inference_mode``).

    Args:
        model: the network; its forward maps (N, ...) to (N, ...) outputs, one row per sample.
        x1: inputs (N1, ...); x2: inputs (N2, ...) with the same trailing shape, or None for x2 = x1,
            in which case Θ is computed once per pair of samples and returned exactly symmetric.
            Both are detached and moved to the trained parameters' device and dtype.
        trace: return the (N1, N2) trace over outputs instead of (N1, N2, O, O).
        method: "auto", "structured" or "jacobian".
        chunk_size: samples per chunk; at most two chunks' features (structured: layer inputs and
            output-gradients, convolutions' Jacobians; jacobian: Jacobians) are held at once. None →
            structured: all samples in one chunk, or fewer when the convolutions' per-sample Jacobians
            would hold more than 2**27 numbers; jacobian: the largest chunk whose Jacobian holds
            ≤ 2**27 numbers.
        dtype: compute in this floating dtype. When the model's parameters or buffers have another
            dtype, a deep copy of the model cast with ``.to(dtype)`` is used (the model itself is not
            touched); None → the trained parameters' dtype.

    Returns:
        Θ, a tensor (N1, N2) or (N1, N2, O, O) of the compute dtype on the parameters' device.

    Raises:
        TypeError / ValueError: bad arguments (named in the message); ValueError for
            ``method="structured"`` on a model it cannot serve, and for a model that does not return
            one row per input sample.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_inputs("x1", x1)
    if x2 is not None and _check_inputs("x2", x2).shape[1:] != x1.shape[1:]:
        raise ValueError(f"x2 samples have shape {tuple(x2.shape[1:])} but x1 samples have {tuple(x1.shape[1:])}")
    _check_options(trace, method, chunk_size, dtype)
    trained = [p for p in model.parameters() if p.requires_grad]
    if not trained:
        raise ValueError(f"{type(model).__name__} has no parameters with requires_grad=True; the NTK is undefined")
    tensors = list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]
    if dtype is not None and any(t.is_floating_point() and t.dtype != dtype for t in tensors):
        model = copy.deepcopy(model).to(dtype)
        trained = [p for p in model.parameters() if p.requires_grad]
    x1 = _prepare(x1, trained[0])
    x2 = None if x2 is None else _prepare(x2, trained[0])
    with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        return _compute(model, x1, x2, trace, method, chunk_size)


def _structured_chunk(model: nn.Module, layers: dict[str, nn.Module], x1: torch.Tensor,
                      x2: torch.Tensor | None) -> int:
    """Default chunk of the structured path: every sample at once, unless the convolutions' per-sample
    Jacobians (chunk, O, P_conv) would hold more than the jacobian path's budget of numbers."""
    n_max = max(x1.shape[0], x1.shape[0] if x2 is None else x2.shape[0])
    conv_params = sum(p.numel() for layer in layers.values() if isinstance(layer, nn.Conv2d)
                      for p in layer.parameters() if p.requires_grad)
    if not conv_params:
        return n_max
    with torch.no_grad():
        n_out = model(x1[:1]).reshape(1, -1).shape[1]
    return min(n_max, default_chunk_size(n_out, conv_params))


def _compute(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None, trace: bool, method: str,
             chunk_size: int | None) -> torch.Tensor:
    if method != "jacobian":
        problem = static_problem(model)
        if problem is None:
            layers = trained_layers(model)
            try:  # layer_features verifies the structured preconditions on every chunk it is given
                return assemble_kernel(partial(layer_features, model, layers), partial(contract_features, trace=trace),
                                       x1, x2, chunk_size or _structured_chunk(model, layers, x1, x2))
            except StructuredUnsupported as error:
                problem = str(error)
        if method == "structured":
            raise ValueError(f"method='structured' cannot compute the NTK of {type(model).__name__}: {problem}; "
                             "use method='jacobian' (or 'auto')")
    trained, constants = split_parameters(model)
    with torch.no_grad():  # per-sample vmap cannot see a model that mixes samples: check on a batch
        out = model(x1[:PROBE_SAMPLES])
    check_output(out, x1[:PROBE_SAMPLES].shape[0])
    if chunk_size is None:
        chunk_size = default_chunk_size(out[0].numel(), sum(p.numel() for p in trained.values()))
    return assemble_kernel(partial(jacobian_features, model, trained, constants),
                           partial(contract_jacobians, trace=trace), x1, x2, chunk_size)
