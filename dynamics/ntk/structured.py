"""Empirical NTK of models whose trained parameters all sit in ``nn.Linear`` or ``nn.Conv2d`` layers.

For a linear layer z = a Wᵀ + b used once per sample, ∂f_o(x_n)/∂W_ij = g_{n,o,i} a_{n,j} and
∂f_o(x_n)/∂b_i = g_{n,o,i}, with a_n the layer's input and g_{n,o} = ∂f_o(x_n)/∂z_n the gradient of
output o with respect to the layer's output at sample n. Hence (Novak et al. 2022, "Fast finite width
neural tangent kernel", structured derivatives; DESIGN §3)

    Θ[n, m, o, p] = Σ_layers (1[W trained]·a_n·a_m + 1[b trained]) · (g_{n,o} · g_{m,p}),

which needs the layer inputs a (N, in) and output-gradients g (N, O, out) only — never the P-wide
Jacobian. A ``nn.Conv2d`` layer (groups = 1, zero padding) contributes the Gram matrix of its own
per-sample Jacobians, built from its input and output-gradients by the unfold form of convolution
(:mod:`dynamics.ntk.conv`) — the layer's block only, again no full Jacobian. All O gradients come
from one batched reverse pass (``torch.autograd.grad`` with ``is_grads_batched=True``) over forward
hooks that record each layer's input and output.

The formula holds only when every trained parameter belongs to exactly one such layer that runs at
most once per forward pass on one slice per sample ((N, in) rows for Linear, (N, C, H, W) images
for Conv2d), and is used nowhere else. These preconditions are verified on **every chunk the kernel is built from** (x1's and x2's):
:func:`static_problem` once for the model's modules, then :func:`layer_features` on each chunk
(hook checks, and a gradient-consistency test that catches a parameter also acting outside its layer
call, or samples that influence each other), raising :class:`StructuredUnsupported` on the first
chunk that breaks one. The recorded layer tensors cannot be rewritten by in-place operations later
in the forward pass (``ReLU(inplace=True)``, ``+=`` on a residual, a module that edits its input):
the hook hands a copy of each layer's output on to the rest of the model, and tensor version
counters confirm after the pass that nothing recorded was modified.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dynamics import inputs
from dynamics.inputs import Inputs, OutputSelector
from dynamics.ntk.blocks import row_gram
from dynamics.ntk.conv import conv2d_gradient, conv2d_jacobian, is_plain_conv2d
from dynamics.ntk.generic import contract_jacobians


class StructuredUnsupported(ValueError):
    """The model breaks an assumption of the structured path; the message says which."""


@dataclass
class LayerFeatures:
    """One layer on a chunk of c samples. Linear: input a (c, in) or None when W is frozen,
    output-gradients g (c, O, out) or None when the outputs do not depend on the layer. Conv2d: its
    per-sample Jacobians, "weight"/"bias" → (c, O, P_k), in ``jacobian`` (``inputs``, ``grads`` None)."""

    inputs: torch.Tensor | None
    grads: torch.Tensor | None
    bias: bool
    jacobian: dict[str, torch.Tensor] | None = None


@dataclass
class ChunkFeatures:
    n: int
    n_out: int
    layers: dict[str, LayerFeatures]  # layers that ran on this chunk, by module name
    like: torch.Tensor  # carries dtype and device


def _is_plain_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward


def _is_supported(module: nn.Module) -> bool:
    return _is_plain_linear(module) or is_plain_conv2d(module)


def trained_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The plain ``nn.Linear`` and ``nn.Conv2d`` sub-modules that own a parameter with requires_grad."""
    return {name: module for name, module in model.named_modules()
            if _is_supported(module)
            and any(p is not None and p.requires_grad for p in module._parameters.values())}


def structured_sample_bytes(layers: dict[str, nn.Module], n_out: int, saved: int, itemsize: int) -> int:
    """Working bytes per sample of one chunk's features: the forward's saved activations (``saved``:
    :attr:`dynamics.ntk.budget.ModelCost.activations`, the model's shared weights left out) once for
    the pass and O times for the batched output-gradients,
    each layer's input, and each convolution's per-sample Jacobian (O · P_conv numbers)."""
    conv = sum(p.numel() for layer in layers.values() if isinstance(layer, nn.Conv2d)
               for p in layer.parameters() if p.requires_grad)
    widths = sum(layer.in_features for layer in layers.values() if isinstance(layer, nn.Linear))
    return saved * (1 + n_out) + itemsize * (widths + n_out * conv + n_out * n_out)


def static_problem(model: nn.Module) -> str | None:
    """Why the structured path cannot serve ``model`` judging by its modules alone, or None."""
    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    names = {id(p): name for name, p in model.named_parameters() if p.requires_grad}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for param in module._parameters.values():
            if param is not None and id(param) in names:
                owners.setdefault(id(param), []).append((module_name, module))
    for key, name in names.items():
        holders = owners.get(key, [])
        if len({id(m) for _, m in holders}) > 1:
            return f"parameter {name!r} is shared by modules {[n for n, _ in holders]}"
        if not holders or not _is_supported(holders[0][1]):
            kind = type(holders[0][1]).__name__ if holders else "no module"
            return (f"trained parameter {name!r} belongs to {kind}, not a plain nn.Linear or nn.Conv2d "
                    "(groups=1, zero padding given as numbers)")
    return None


def _one_slice_per_sample(layer: nn.Module, a: torch.Tensor, z: torch.Tensor, n: int) -> bool:
    """True when the layer saw one input slice per sample: (n, in) rows, or (n, C, H, W) images."""
    if isinstance(layer, nn.Linear):
        return a.dim() == 2 and a.shape[0] == n and z.shape == (n, layer.out_features)
    return a.dim() == 4 and a.shape[0] == n and z.dim() == 4 and z.shape[:2] == (n, layer.out_channels)


def _forward_recording(model: nn.Module, layers: dict[str, nn.Module], x: Inputs, output: OutputSelector):
    """The studied output of model(x) (:func:`dynamics.inputs.outputs`, (n, O)) with every call of the given layers recorded as (input, output).

    Each layer's output z is recorded and a copy of it continues through the model, so in-place
    operations downstream (activations with ``inplace=True``, ``+=``, ``mul_``) change the copy,
    never z; z's gradient is then the true ∂f/∂z. Inputs are recorded as they are; the version
    counters of inputs and outputs are compared after the pass, and any in-place change of a recorded
    tensor raises :class:`StructuredUnsupported`.
    """
    records: dict[str, list[tuple[torch.Tensor, torch.Tensor, int, int]]] = {name: [] for name in layers}

    def make_hook(name: str):
        def hook(module, args, kwargs, output):
            a = args[0] if args else kwargs["input"]
            records[name].append((a, output, a._version, output._version))
            return output.clone()
        return hook

    handles = [m.register_forward_hook(make_hook(n), with_kwargs=True, prepend=True) for n, m in layers.items()]
    n = inputs.n_samples(x)
    try:
        out = inputs.outputs(model, x, output)
    finally:
        for handle in handles:
            handle.remove()
    used = {}
    for name, calls in records.items():
        kind = f"nn.{type(layers[name]).__name__}"
        if len(calls) > 1:
            raise StructuredUnsupported(f"{kind} {name!r} runs {len(calls)} times in one forward pass")
        if calls:
            a, z, a_version, z_version = calls[0]
            if not _one_slice_per_sample(layers[name], a, z, n):
                raise StructuredUnsupported(
                    f"{kind} {name!r} sees input {tuple(a.shape)} for {n} samples; "
                    "the structured path needs one row per sample (one image for Conv2d)")
            if a._version != a_version or z._version != z_version:
                raise StructuredUnsupported(
                    f"the {'input' if a._version != a_version else 'output'} of {kind} {name!r} is modified "
                    "in place later in the forward pass")
            used[name] = (a, z)
    return out, used


def _implied_gradient(name: str, layer: nn.Module, features: LayerFeatures, a: torch.Tensor,
                      v: torch.Tensor) -> dict[str, torch.Tensor]:
    """Σ_n Σ_o v[n, o] ∂f_o(x_n)/∂θ for the layer's parameters, as the features imply it."""
    prefix = f"{name}." if name else ""
    if features.jacobian is not None:
        return {prefix + k: g for k, g in conv2d_gradient(layer, features.jacobian, v).items()}
    gz = torch.einsum("nok,no->nk", features.grads, v)
    return {prefix + "weight": gz.T @ a, prefix + "bias": gz.sum(0)}


def _check_gradients(model: nn.Module, layers: dict[str, nn.Module], out: torch.Tensor,
                     used: dict[str, tuple[torch.Tensor, torch.Tensor]],
                     features: dict[str, LayerFeatures]) -> None:
    """Raise unless the layer features reproduce the true parameter gradient of ⟨v, f(x)⟩.

    For a fixed random v (n, O) the true gradient (autograd, one reverse pass) must equal the one the
    features imply (:func:`_implied_gradient`), up to round-off (relative 1e3·eps). A mismatch means a
    parameter also acts outside its layer call, or samples influence each other.
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    generator = torch.Generator(device=out.device).manual_seed(0)
    v = torch.randn(out.shape, generator=generator, dtype=out.dtype, device=out.device)
    true = dict(zip(params, torch.autograd.grad(out, list(params.values()), grad_outputs=v, allow_unused=True)))
    implied = {}
    for name, f in features.items():
        if f.grads is not None or f.jacobian is not None:
            implied.update(_implied_gradient(name, layers[name], f, used[name][0].detach(), v))
    tolerance = 1e3 * torch.finfo(out.dtype).eps
    for name, grad in true.items():
        grad = torch.zeros_like(params[name]) if grad is None else grad
        expected = implied.get(name)
        expected = torch.zeros_like(grad) if expected is None else expected
        error = (grad - expected).norm()
        if error > tolerance * (grad.norm() + expected.norm()) + torch.finfo(out.dtype).tiny:
            raise StructuredUnsupported(
                f"parameter {name!r} also acts outside its layer call, or samples influence each "
                f"other (its gradient differs from the one the layer's input and output-gradients imply by "
                f"{error.item():.3g})")


def layer_features(model: nn.Module, layers: dict[str, nn.Module], x: Inputs,
                   output: OutputSelector = None) -> ChunkFeatures:
    """Per layer: inputs a and output-gradients g (Linear) or the per-sample Jacobian (Conv2d), for all O
    outputs from one batched reverse pass.

    Also verifies, on this chunk, every precondition of the structured formula (module docstring)
    and raises :class:`StructuredUnsupported` naming the first one broken.
    """
    with torch.enable_grad():
        out, used = _forward_recording(model, layers, x, output)
        n, n_out = out.shape
        names = [name for name, (_, z) in used.items() if z.requires_grad]
        grads: list[torch.Tensor | None] = [None] * len(names)
        if names and out.requires_grad:
            basis = torch.eye(n_out, dtype=out.dtype, device=out.device)[:, None, :].repeat(1, n, 1)
            grads = list(torch.autograd.grad(out, [used[k][1] for k in names], grad_outputs=basis,
                                             is_grads_batched=True, allow_unused=True, retain_graph=True))
        features = {}
        for name, grad in zip(names, grads):
            layer, a = layers[name], used[name][0].detach()
            grad = None if grad is None else grad.transpose(0, 1)  # (c, O, ...)
            if isinstance(layer, nn.Conv2d):
                features[name] = LayerFeatures(None, None, False,
                                               None if grad is None else conv2d_jacobian(layer, a, grad))
            else:
                features[name] = LayerFeatures(inputs=a if layer.weight.requires_grad else None, grads=grad,
                                               bias=layer.bias is not None and layer.bias.requires_grad)
        if out.requires_grad:
            _check_gradients(model, layers, out, used, features)
    return ChunkFeatures(n, n_out, features, out.detach())


def contract_features(f1: ChunkFeatures, f2: ChunkFeatures, trace: bool) -> torch.Tensor:
    """Θ block (c1, c2) traced over outputs, or (c1, c2, O, O), from two chunks' features."""
    shape = (f1.n, f2.n) if trace else (f1.n, f2.n, f1.n_out, f1.n_out)
    total = f1.like.new_zeros(shape)
    for name, l1 in f1.layers.items():
        l2 = f2.layers.get(name)  # a layer that did not run on one chunk contributes nothing
        if l2 is not None and l1.jacobian is not None and l2.jacobian is not None:
            total += contract_jacobians(l1.jacobian, l2.jacobian, trace)
            continue
        if l2 is None or l1.grads is None or l2.grads is None:
            continue
        gram = row_gram(l1.inputs, l2.inputs) if l1.inputs is not None else f1.like.new_zeros(f1.n, f2.n)
        if l1.bias:
            gram = gram + 1
        if trace:  # Σ_o g1[:, o] · g2[:, o]ᵀ as one (c1, O·out) × (O·out, c2) product: no (O, c1, c2) temporary
            total.addcmul_(gram, row_gram(l1.grads.reshape(f1.n, -1), l2.grads.reshape(f2.n, -1)))
        else:
            width = l1.grads.shape[-1]
            out_gram = row_gram(l1.grads.reshape(-1, width), l2.grads.reshape(-1, width))
            out_gram = out_gram.reshape(f1.n, f1.n_out, f2.n, f2.n_out).permute(0, 2, 1, 3)
            total.addcmul_(gram[:, :, None, None], out_gram)
    return total


def structured_problem(model: nn.Module, x: Inputs, output: OutputSelector = None) -> str | None:
    """Why the structured path cannot serve ``model`` on the inputs ``x`` (all of them, one chunk), or None.

    :func:`static_problem`, then :func:`layer_features` on the whole of ``x`` (each layer runs at
    most once, on one row per sample; no recorded tensor modified in place; the gradient-consistency
    test of :func:`_check_gradients`). ``empirical_ntk`` runs the same checks on every chunk it uses.
    """
    problem = static_problem(model)
    if problem is not None:
        return problem
    try:
        layer_features(model, trained_layers(model), inputs.check_inputs(x), output)
    except StructuredUnsupported as error:
        return str(error)
    except (RuntimeError, NotImplementedError) as error:   # e.g. a reentrant checkpoint refuses autograd.grad
        return f"its batched reverse pass failed ({type(error).__name__}: {str(error).splitlines()[0]})"
    return None
