"""Per-sample Jacobian rows of any model, by torch.func or by plain autograd.

For a chunk of c samples and a block of output indices, the rows are J_k[n, o, :] = ∂f_o(x_n)/∂θ_k
for every trained parameter θ_k, returned as name → (c, O_block, P_k). Two backends compute them:

- ``"func"``: ``vmap(jacrev(f))`` over single samples, f the model called with substituted parameters
  (:func:`dynamics.functional.call`) on a batch of one (fast: one batched reverse pass per chunk);
- ``"autograd"``: one forward pass per sample and one ``torch.autograd.grad`` per output, on the
  model's own parameters (``.grad`` and hooks untouched). It serves models torch.func cannot
  transform: activation checkpointing (``torch.utils.checkpoint``, whose saved-tensor hooks and
  autograd.Function torch.func refuses), modules without vmap batching rules (``nn.GRU``), data-
  dependent Python control flow. A reentrant checkpoint (``use_reentrant=True``) refuses
  ``autograd.grad`` too; its rows come from ``.backward()`` on a private deep copy of the model.

:func:`choose_backend` tries ``"func"`` on one sample and falls back to ``"autograd"`` when torch.func
cannot transform the model, so ``empirical_ntk(method="auto")`` works for every model that plain
autograd can differentiate; ``method="jacobian"`` with a model torch.func refuses raises a
ValueError that names the limitation and the method that works.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.func import jacrev, vmap

from dynamics import functional, inputs
from dynamics.functional import parameter_slots
from dynamics.inputs import Inputs, OutputSelector

BACKENDS = ("func", "autograd")


def trained_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Name → detached tensor of every trained parameter (requires_grad), ``named_parameters`` order;
    frozen parameters and buffers stay in the model as constants."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def _func_rows(model: nn.Module, output: OutputSelector) -> Callable[[Inputs, slice], dict[str, torch.Tensor]]:
    trained = trained_tensors(model)
    slots = parameter_slots(model)

    def rows(x: Inputs, block: slice) -> dict[str, torch.Tensor]:
        def single(params: dict[str, torch.Tensor], sample: Inputs) -> torch.Tensor:
            one = inputs.map_leaves(lambda t: t.unsqueeze(0), sample)
            return functional.call(model, params, one, output, slots).reshape(-1)[block]

        with torch.enable_grad():
            jac = vmap(jacrev(single), in_dims=(None, 0))(trained, x)
        return {name: j.reshape(j.shape[0], j.shape[1], -1) for name, j in jac.items()}
    return rows


def _reentrant_refusal(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and "use_reentrant=True" in str(error)


def _autograd_rows(model: nn.Module, output: OutputSelector) -> Callable[[Inputs, slice], dict[str, torch.Tensor]]:
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    state = {"twin": None}   # a deep copy for models whose reentrant checkpoints refuse autograd.grad

    def grads_by_backward(out: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
        for p in params:
            p.grad = None
        out.backward(retain_graph=True)
        return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]

    def rows(x: Inputs, block: slice) -> dict[str, torch.Tensor]:
        per_sample = []
        for n in range(inputs.n_samples(x)):
            net = model if state["twin"] is None else state["twin"]
            params = [p for _, p in net.named_parameters() if p.requires_grad]
            with torch.enable_grad():
                out = inputs.outputs(net, inputs.rows(x, n, n + 1), output).reshape(-1)[block]
                sample = []
                for o in range(out.numel()):
                    if not out.requires_grad:
                        sample.append([torch.zeros_like(p) for p in params])
                    elif state["twin"] is not None:
                        sample.append(grads_by_backward(out[o], params))
                    else:
                        try:
                            got = torch.autograd.grad(out[o], params, retain_graph=True, allow_unused=True)
                        except RuntimeError as error:
                            if not _reentrant_refusal(error):
                                raise
                            state["twin"] = copy.deepcopy(model)
                            return rows(x, block)
                        sample.append([torch.zeros_like(p) if g is None else g for p, g in zip(params, got)])
            per_sample.append(sample)
        return {name: torch.stack([torch.stack([o[k] for o in s]).reshape(len(s), -1) for s in per_sample])
                for k, name in enumerate(names)}
    return rows


def make_rows(model: nn.Module, output: OutputSelector, backend: str) -> Callable[[Inputs, slice], dict[str, torch.Tensor]]:
    """``rows(x, block)`` → name → (c, len(block), P_k) Jacobian rows of the model on the chunk x, for
    the output indices ``block`` (a slice of the flattened per-sample output), by ``backend``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return _func_rows(model, output) if backend == "func" else _autograd_rows(model, output)


#: What torch.func raises for a model it cannot transform (and plain autograd can differentiate).
FUNC_LIMITS = (RuntimeError, NotImplementedError, TypeError, ValueError)


def func_refusal(model: nn.Module, x: Inputs, output: OutputSelector) -> BaseException | None:
    """None when torch.func computes the rows of one sample and one output; otherwise its error."""
    try:
        _func_rows(model, output)(inputs.rows(x, 0, 1), slice(0, 1))
    except FUNC_LIMITS as error:
        return error
    return None


def choose_backend(model: nn.Module, x: Inputs, output: OutputSelector, method: str) -> str:
    """"func" when torch.func can transform the model (checked on one sample, one output); else
    "autograd" for method "auto"/"autograd", and for method "jacobian" a ValueError naming the
    limitation (torch.func's own message) and the methods that work."""
    if method == "autograd":
        return "autograd"
    error = func_refusal(model, x, output)
    if error is None:
        return "func"
    if method == "auto":
        return "autograd"
    raise ValueError(f"method={method!r} uses torch.func, which cannot differentiate {type(model).__name__}: "
                     f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} (activation "
                     f"checkpointing, a module without vmap support, data-dependent control flow); "
                     f"method='autograd' or 'auto' computes the same kernel with plain autograd") from error
