"""Wrapper modules and canonical names: the one place where a model's parameter and layer names come from.

Training frameworks wrap the model a researcher wrote: ``torch.compile`` (``OptimizedModule``, which
holds it as ``_orig_mod``), ``DistributedDataParallel`` / ``DataParallel`` (``module``), FSDP
(``_fsdp_wrapped_module``), activation-checkpoint wrappers (``_checkpoint_wrapped_module``) and
Lightning Fabric's module (``_original_module``; Lightning's Trainer wraps a LightningModule in DDP,
and the LightningModule itself — the module the researcher wrote — is the network). Each
adds its attribute to the names of everything inside it, so the same network would be stored under
other names depending on how it was trained (``_orig_mod.0.weight`` vs ``0.weight``) — and a
resumed run would split every tensor's history in two.

Canonical names are the names in the network itself: every wrapper — at the top or anywhere inside
(a compiled block, an FSDP-wrapped layer) — is transparent, its attribute left out of the names
(wrappers are recognised by class, never by a name, so a user module called ``module`` keeps its
name). :func:`unwrap_model` strips the top-level wrappers (every entry point computes on the network
itself: torch.func and hooks on an eager module, no collective operation of DDP/FSDP);
:func:`canonical_parameters` and :func:`canonical_modules` give the names every stored variable,
layer list and resume check uses.

FSDP with flattened parameters (``use_orig_params=False``) keeps no per-tensor parameters: it is
refused with a ValueError (record the unsharded module, or use ``use_orig_params=True``).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

#: (defining module prefix, class name) → attribute holding the wrapped module. Matched on the class and
#: its bases, so subclasses (Lightning's strategy-specific wrappers) are recognised too.
WRAPPERS: dict[tuple[str, str], str] = {
    ("torch._dynamo", "OptimizedModule"): "_orig_mod",
    ("torch.nn.parallel", "DistributedDataParallel"): "module",
    ("torch.nn.parallel", "DataParallel"): "module",
    ("torch.distributed.fsdp", "FullyShardedDataParallel"): "_fsdp_wrapped_module",
    ("torch.distributed.algorithms._checkpoint", "ActivationWrapper"): "_checkpoint_wrapped_module",
    ("lightning.fabric.wrappers", "_FabricModule"): "_original_module",
    ("lightning_fabric.wrappers", "_FabricModule"): "_original_module",
}


def wrapped_attribute(module: nn.Module) -> str | None:
    """The attribute under which ``module`` holds the module it wraps (:data:`WRAPPERS`), or None."""
    for cls in type(module).__mro__:
        for (prefix, name), attribute in WRAPPERS.items():
            if cls.__name__ == name and cls.__module__.startswith(prefix):
                inner = module._modules.get(attribute)
                return attribute if isinstance(inner, nn.Module) else None
    return None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The network inside every top-level wrapper of ``model`` (``model`` itself when it wraps nothing)."""
    attribute = wrapped_attribute(model)
    while attribute is not None:
        model = model._modules[attribute]
        attribute = wrapped_attribute(model)
    return model


def _walk(module: nn.Module, raw: str, canonical: str, seen: set[int]) -> Iterator[tuple[str, str, nn.Module]]:
    """(raw name, canonical name, module) of ``module`` and everything below it; wrappers are skipped
    (their inner module takes their names)."""
    attribute = wrapped_attribute(module)
    if attribute is not None:
        inner_raw = f"{raw}.{attribute}" if raw else attribute
        yield from _walk(module._modules[attribute], inner_raw, canonical, seen)
        return
    if id(module) in seen:
        return
    seen.add(id(module))
    yield raw, canonical, module
    for name, child in module._modules.items():
        if child is not None:
            yield from _walk(child, f"{raw}.{name}" if raw else name,
                             f"{canonical}.{name}" if canonical else name, seen)


def canonical_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Canonical name → module for the root (``""``) and every sub-module, wrappers left out, each module
    once (under its first name, as ``named_modules``)."""
    return {canonical: module for _, canonical, module in _walk(model, "", "", set())}


def _check_flat(name: str) -> None:
    if name.split(".")[-1].startswith("_flat_param"):
        raise ValueError(f"parameter {name!r} is an FSDP flat parameter (use_orig_params=False): it holds many "
                         "tensors; record the unsharded module, or wrap with use_orig_params=True")


def canonical_parameters(model: nn.Module, *, trained: bool = True) -> dict[str, nn.Parameter]:
    """Canonical name → parameter (each parameter once, in ``named_parameters`` order); only those with
    requires_grad when ``trained``. ValueError for an FSDP flat parameter."""
    out: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for _, canonical, module in _walk(model, "", "", set()):
        for name, param in module._parameters.items():
            if param is None or id(param) in seen:
                continue
            seen.add(id(param))
            full = f"{canonical}.{name}" if canonical else name
            _check_flat(full)
            if param.requires_grad or not trained:
                out[full] = param
    return out


def canonical_names(model: nn.Module) -> dict[str, str]:
    """Raw parameter name (as ``model.named_parameters()`` gives it) → canonical name."""
    by_id = {id(p): name for name, p in canonical_parameters(model, trained=False).items()}
    return {raw: by_id[id(p)] for raw, p in model.named_parameters() if id(p) in by_id}
