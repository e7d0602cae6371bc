"""Hidden representations of a model on a fixed probe set, captured with forward hooks.

``capture_representations(model, x, layers)`` runs ``model(x)`` once (or once per chunk of samples)
in eval mode under ``torch.no_grad`` and returns, for every named module in ``layers``, that
module's output flattened after the sample dimension: a tensor of shape (N, units).
``resolve_layers`` turns ``layers=None`` into the model's default list and validates explicit names.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from dynamics import inputs
from dynamics.inputs import Inputs
from dynamics.models.layers import eval_mode
from dynamics.wrappers import canonical_modules, unwrap_model

#: Module types counted as "activations" when a model declares no ``representation_layers``.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ReLU6, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.Tanhshrink, nn.LogSigmoid,
)


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def available_layers(model: nn.Module) -> list[str]:
    """Canonical names of every sub-module of ``model`` (:func:`dynamics.wrappers.canonical_modules`:
    ``named_modules()`` without the root ``""`` and without wrappers such as ``torch.compile``'s
    ``_orig_mod`` or DDP's ``module``)."""
    return [name for name in canonical_modules(unwrap_model(_check_model(model))) if name]


def _default_layers(model: nn.Module) -> list[str]:
    model = unwrap_model(model)
    declared = getattr(model, "representation_layers", None)
    if declared is not None:
        return list(declared)
    leaves = [(name, module) for name, module in canonical_modules(model).items()
              if name and not any(True for _ in module.children())]
    activations = [name for name, module in leaves if isinstance(module, ACTIVATION_TYPES)]
    if activations:
        return activations
    if len(leaves) < 2:
        raise ValueError(f"cannot choose default representation layers for {type(model).__name__}: it has "
                         f"{len(leaves)} leaf module(s) and no activations; pass layers=[...] explicitly")
    return [name for name, _ in leaves[:-1]]


def resolve_layers(model: nn.Module, layers: str | Iterable[str] | None = None) -> list[str]:
    """The module names whose outputs are recorded as representations.

    ``layers=None`` → ``model.representation_layers`` when the model defines it (RevMLP: every
    coupling block ``blocks.{b}``; MLP: every hidden activation ``activations.{i}``); otherwise every
    leaf module that is an activation (:data:`ACTIVATION_TYPES`); failing that, every leaf module but
    the last (registration order). A single string means one layer.

    Raises:
        TypeError: ``model`` is not a module, or a name is not a string.
        ValueError: an unknown or repeated name (the message lists the available module names), or
            an empty list.
    """
    _check_model(model)
    names = _default_layers(model) if layers is None else ([layers] if isinstance(layers, str) else layers)
    try:
        names = list(names)
    except TypeError:
        raise TypeError(f"layers must be None, a string or an iterable of strings, got {type(layers).__name__}") from None
    if not names:
        raise ValueError(f"layers is empty; choose among {available_layers(model)}")
    available = set(available_layers(model))
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"layer names must be strings, got {name!r} ({type(name).__name__})")
        if name not in available:
            raise ValueError(f"unknown layer {name!r} for {type(model).__name__}; "
                             f"available: {available_layers(model)}")
        if name in seen:
            raise ValueError(f"layer {name!r} is listed twice")
        seen.add(name)
    return names


def _first_tensor(name: str, output: object) -> torch.Tensor:
    """The module output itself, or the first tensor of a tuple/list output."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"layer {name!r} returned {type(output).__name__}, which holds no tensor to record")


def _capture_chunk(model: nn.Module, modules: dict[str, nn.Module], x: Inputs, whole: Inputs) -> dict[str, torch.Tensor]:
    """Each module's output on the chunk ``x`` of ``whole`` (named in errors)."""
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in modules}

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            # A copy taken now: later in-place operations (ReLU(inplace=True), ``+=``, ``mul_``, a
            # module that edits its input) rewrite the module's output tensor itself, so a kept
            # reference would hold values computed after this layer.
            value = _first_tensor(name, output)
            outputs[name].append(value.detach().clone(memory_format=torch.contiguous_format))
        return hook

    handles = [module.register_forward_hook(make_hook(name)) for name, module in modules.items()]
    n = inputs.n_samples(x)
    try:
        inputs.call(model, x)
    except Exception as error:
        raise inputs.note_input(error, whole)
    finally:
        for handle in handles:
            handle.remove()
    captured = {}
    for name, seen in outputs.items():
        if len(seen) != 1:
            raise ValueError(f"layer {name!r} was called {len(seen)} times in one forward pass; "
                             "a recorded layer must run exactly once")
        out = seen[0]
        if out.dim() == 0 or out.shape[0] != n:
            raise ValueError(f"layer {name!r} output has shape {tuple(out.shape)}, which does not start "
                             f"with the {n} samples of the input")
        captured[name] = out.reshape(out.shape[0], -1)  # a view of the hook's own copy
    return captured


def capture_representations(model: nn.Module, x: Inputs, layers: str | Iterable[str] | None = None,
                            *, chunk_size: int | None = None) -> dict[str, torch.Tensor]:
    """Outputs of the named modules of ``model`` on the inputs ``x``.

    Wrappers (``torch.compile``, DDP, ...) are unwrapped and layers are named canonically
    (:mod:`dynamics.wrappers`).

    Each module's output is flattened after the sample dimension: ``out.reshape(N, -1)``, giving a
    tensor of shape (N, units), detached and freshly allocated (never a view of ``x``). The value is
    copied inside the forward hook, the moment the module returns, so operations that later modify
    that tensor in place (``nn.ReLU(inplace=True)``, in-place dropout, ``+=``, ``mul_``, a module
    that edits its input) do not change what is recorded. A module that returns a tuple or list is
    recorded by its first tensor. The model runs in eval mode under
    ``torch.no_grad``; every sub-module's train/eval flag is restored afterwards and the hooks are
    removed, also when the forward pass raises.

    Args:
        model: any ``nn.Module`` whose forward takes the batch ``x``.
        x: what the model's forward takes (:mod:`dynamics.inputs`): a tensor (N, ...), a tuple of
            tensors (positional arguments) or a dict of tensors (keyword arguments), floating,
            integer (token ids) or bool, N ≥ 1 rows in every leaf, on the model's device (floating
            leaves in the model's dtype); integer inputs are never cast.
        layers: module names (see :func:`resolve_layers`; None → the model's defaults).
        chunk_size: run the forward pass on at most this many samples at a time (None: all at once).

    Returns:
        dict mapping each layer name (in ``layers`` order) to a tensor (N, units).
    """
    _check_model(model)
    x = inputs.check_inputs(x, "x")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)):
        raise TypeError(f"chunk_size must be None or an int, got {chunk_size!r}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    model = unwrap_model(model)
    names = resolve_layers(model, layers)
    all_modules = canonical_modules(model)
    modules = {name: all_modules[name] for name in names}
    step = inputs.n_samples(x) if chunk_size is None else chunk_size
    pieces: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    with eval_mode(model), torch.no_grad():
        for _, _, chunk in inputs.chunks(x, step):
            for name, out in _capture_chunk(model, modules, chunk, x).items():
                pieces[name].append(out)
    return {name: chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=0) for name, chunks in pieces.items()}
