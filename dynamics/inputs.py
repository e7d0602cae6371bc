"""Model inputs and outputs: the one place for what a model's forward takes and which output is studied.

Every entry point that runs a model — :func:`dynamics.ntk.empirical_ntk`,
:func:`dynamics.capture.capture_representations`, :class:`dynamics.gauss_newton.KernelGN`, the
:class:`dynamics.Recorder`'s probe — takes what the model's forward takes (DESIGN §4 "Inputs"):

- a tensor (N, ...)                       → ``model(x)``
- a tuple or list of tensors              → ``model(*x)`` (positional arguments)
- a dict of tensors with identifier keys  → ``model(**x)`` (keyword arguments, as Hugging Face
  models take ``input_ids``, ``attention_mask``, ...)

Leaves may be floating, integer (token ids) or bool (masks) tensors; complex and sparse tensors are
refused. Every leaf has the same leading sample dimension N ≥ 1; a batch is sliced, chunked and moved
along that dimension leaf by leaf, and only floating leaves are cast to a compute dtype (token ids and
masks keep theirs). The NTK, the GN step and capture differentiate with respect to the *parameters*,
never the inputs, so integer inputs are as valid as floating ones.

Outputs (:func:`select_output`): a tensor is used as it is; a mapping (a dict, a Hugging Face
``ModelOutput``) by its ``"logits"`` entry; a tuple or list by its first element. ``output=`` (a
key, an index, or a callable taking the forward's return value) chooses another. The chosen tensor
must hold one row per input sample; it is flattened after that dimension to O numbers per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Union

import torch
from torch import nn

#: What a model's forward takes: a tensor, a tuple/list of tensors, or a dict of tensors.
Inputs = Union[torch.Tensor, tuple, list, dict]
#: How the studied output is chosen from the forward's return value (see :func:`select_output`).
OutputSelector = Union[None, str, int, Callable[[Any], torch.Tensor]]


def _structure(x: object, name: str) -> str:
    if isinstance(x, torch.Tensor):
        return "tensor"
    if isinstance(x, (tuple, list)):
        return "tuple"
    if isinstance(x, Mapping):
        return "dict"
    raise TypeError(f"{name} must be a torch.Tensor, a tuple/list of tensors or a dict of tensors, "
                    f"got {type(x).__name__}")


def leaves(x: Inputs) -> list[tuple[int | str | None, torch.Tensor]]:
    """(key, tensor) of every leaf: key None for a single tensor, the position for a tuple/list,
    the keyword for a dict (no validation; see :func:`check_inputs`)."""
    kind = _structure(x, "inputs")
    if kind == "tensor":
        return [(None, x)]
    if kind == "tuple":
        return list(enumerate(x))
    return list(x.items())


def map_leaves(fn: Callable[[torch.Tensor], Any], x: Inputs) -> Inputs:
    """The same structure with ``fn`` applied to every leaf (a list comes back as a tuple)."""
    kind = _structure(x, "inputs")
    if kind == "tensor":
        return fn(x)
    if kind == "tuple":
        return tuple(fn(t) for t in x)
    return {k: fn(t) for k, t in x.items()}


def describe(x: Inputs) -> str:
    """A short description for messages: ``tensor (5, 3) float32`` or ``dict{input_ids: (5, 7) int64, ...}``."""
    try:
        items = leaves(x)
    except TypeError:
        return type(x).__name__
    def one(t: Any) -> str:
        return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" if isinstance(t, torch.Tensor) \
            else type(t).__name__
    if items and items[0][0] is None:
        return f"tensor {one(x)}"
    if isinstance(x, Mapping):
        return "dict{" + ", ".join(f"{k}: {one(t)}" for k, t in items) + "}"
    return "tuple(" + ", ".join(one(t) for _, t in items) + ")"


def check_inputs(x: object, name: str = "x") -> Inputs:
    """``x`` if it is a valid input (module docstring); TypeError/ValueError naming ``name`` otherwise.

    Checks: the structure (tensor, non-empty tuple/list, non-empty dict with identifier string keys),
    every leaf a dense real or bool tensor with a leading dimension, the same number N ≥ 1 of samples
    in every leaf. Returns ``x`` with a list turned into a tuple.
    """
    kind = _structure(x, name)
    if kind != "tensor" and not len(x):
        raise ValueError(f"{name} is an empty {type(x).__name__}; give at least one tensor")
    if kind == "dict":
        for key in x:
            if not isinstance(key, str) or not key.isidentifier():
                raise TypeError(f"{name} dict keys must be keyword-argument names (identifiers), got {key!r}")
    n = None
    for key, leaf in leaves(x):
        where = name if key is None else f"{name}[{key!r}]"
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(f"{where} must be a torch.Tensor, got {type(leaf).__name__}")
        if leaf.layout != torch.strided:
            raise TypeError(f"{where} is a {leaf.layout} tensor; give a dense tensor")
        if leaf.is_complex():
            raise TypeError(f"{where} has complex dtype {leaf.dtype}; inputs must be real, integer or bool")
        if leaf.dim() == 0 or leaf.shape[0] == 0:
            raise ValueError(f"{where} needs a leading sample dimension with at least one sample, "
                             f"got shape {tuple(leaf.shape)}")
        if n is None:
            n = leaf.shape[0]
        elif leaf.shape[0] != n:
            raise ValueError(f"every input must have the same number of samples (leading dimension): "
                             f"{describe(x)}")
    return tuple(x) if kind == "tuple" else x


def n_samples(x: Inputs) -> int:
    """N, the leading dimension shared by every leaf."""
    return leaves(x)[0][1].shape[0]


def sample_shapes(x: Inputs) -> list[tuple[int | str | None, tuple[int, ...], torch.dtype]]:
    """(key, shape after the sample dimension, dtype) of every leaf: what two inputs must share to be
    fed to the same model (x1 and x2 of a kernel)."""
    return [(k, tuple(t.shape[1:]), t.dtype) for k, t in leaves(x)]


def check_compatible(x1: Inputs, x2: Inputs, names: tuple[str, str] = ("x1", "x2")) -> None:
    """ValueError unless x2 has x1's structure, and every leaf x1's per-sample shape and dtype."""
    a, b = sample_shapes(x1), sample_shapes(x2)
    if _structure(x1, names[0]) != _structure(x2, names[1]) or [k for k, _, _ in a] != [k for k, _, _ in b]:
        raise ValueError(f"{names[1]} ({describe(x2)}) does not have the structure of {names[0]} ({describe(x1)})")
    for (key, s1, d1), (_, s2, d2) in zip(a, b):
        if s1 != s2 or d1.is_floating_point != d2.is_floating_point:
            where = "" if key is None else f"[{key!r}]"
            raise ValueError(f"{names[1]}{where} samples have shape {s2} ({d2}) but {names[0]}{where} samples "
                             f"have {s1} ({d1})")


def rows(x: Inputs, start: int, stop: int) -> Inputs:
    """Samples ``start:stop`` of every leaf."""
    return map_leaves(lambda t: t[start:stop], x)


def chunks(x: Inputs, size: int) -> Iterator[tuple[int, int, Inputs]]:
    """(start, stop, rows) over consecutive chunks of at most ``size`` samples."""
    n = n_samples(x)
    for start in range(0, n, size):
        stop = min(start + size, n)
        yield start, stop, rows(x, start, stop)


def concatenate(pieces: list[Inputs]) -> Inputs:
    """The chunks of :func:`chunks` joined again along the sample dimension."""
    first = pieces[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(pieces)
    if isinstance(first, Mapping):
        return {k: torch.cat([p[k] for p in pieces]) for k in first}
    return tuple(torch.cat([p[i] for p in pieces]) for i in range(len(first)))


def prepare(x: Inputs, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Inputs:
    """Every leaf detached (an inference-mode tensor cloned, so autograd may use it), moved to
    ``device``; floating leaves cast to ``dtype`` (integer and bool leaves keep theirs)."""
    def one(t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        if t.is_inference():
            t = t.clone()
        cast = dtype if dtype is not None and t.is_floating_point() else None
        return t.to(device=device, dtype=cast)
    return map_leaves(one, x)


def floating_leaves(x: Inputs) -> list[tuple[int | str | None, torch.Tensor]]:
    """The floating-point leaves (the only ones a dtype applies to)."""
    return [(k, t) for k, t in leaves(x) if t.is_floating_point()]


def check_finite(x: Inputs, name: str = "x") -> None:
    """ValueError naming the leaf and count when a floating leaf holds NaN or Inf."""
    for key, leaf in floating_leaves(x):
        bad = int((~torch.isfinite(leaf)).sum())
        if bad:
            where = name if key is None else f"{name}[{key!r}]"
            raise ValueError(f"{where} contains {bad} non-finite (NaN/Inf) values")


def call_arguments(x: Inputs) -> tuple[tuple, dict]:
    """(args, kwargs) that pass ``x`` to a forward: (x,) / tuple(x) / **x."""
    if isinstance(x, torch.Tensor):
        return (x,), {}
    if isinstance(x, Mapping):
        return (), dict(x)
    return tuple(x), {}


def call(model: nn.Module, x: Inputs) -> Any:
    """``model(x)``, ``model(*x)`` or ``model(**x)``."""
    args, kwargs = call_arguments(x)
    return model(*args, **kwargs)


def check_selector(output: object) -> OutputSelector:
    """``output`` if it is None, a string key, an int index or a callable; TypeError otherwise."""
    if output is None or isinstance(output, str) or callable(output) or (
            isinstance(output, int) and not isinstance(output, bool)):
        return output
    raise TypeError(f"output must be None, a key (str), an index (int) or a callable, got {output!r}")


def select_output(out: Any, output: OutputSelector = None) -> torch.Tensor:
    """The studied output tensor of a forward's return value ``out`` (module docstring).

    None: a tensor as it is, a mapping's ``"logits"``, a tuple's/list's first element. A str: that key
    of a mapping (or attribute). An int: that element of a tuple/list. A callable: ``output(out)``.
    TypeError/ValueError naming what was returned when the choice finds no tensor.
    """
    if callable(output) and not isinstance(output, (str, int)):
        chosen = output(out)
    elif isinstance(out, torch.Tensor) and output is None:
        chosen = out
    elif isinstance(out, Mapping) or (isinstance(output, str) and hasattr(out, output)):
        key = "logits" if output is None else output
        if isinstance(out, Mapping) and key in out:
            chosen = out[key]
        elif not isinstance(out, Mapping) and isinstance(key, str) and hasattr(out, key):
            chosen = getattr(out, key)
        else:
            keys = list(out.keys()) if isinstance(out, Mapping) else []
            raise ValueError(f"the model returned a {type(out).__name__} without {key!r} (keys {keys}); "
                             f"choose the studied output with output=<key>")
    elif isinstance(out, (tuple, list)):
        index = 0 if output is None else output
        if not isinstance(index, int) or not -len(out) <= index < len(out):
            raise ValueError(f"output={output!r} does not select an element of the {len(out)}-tuple the model "
                             f"returned")
        chosen = out[index]
    else:
        raise TypeError(f"output={output!r} cannot select from the {type(out).__name__} the model returned")
    if not isinstance(chosen, torch.Tensor):
        raise TypeError(f"the selected output is a {type(chosen).__name__}, not a tensor; choose another with "
                        f"output=")
    return chosen


def check_rows(out: object, n: int) -> torch.Tensor:
    """``out`` if it is a tensor (n, ...) with one row per input sample; ValueError otherwise."""
    if not isinstance(out, torch.Tensor) or out.dim() == 0 or out.shape[0] != n:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return a tensor (N, ...) with one row per input; for {n} inputs "
                         f"it returned shape {shape}")
    return out


def outputs(model: nn.Module, x: Inputs, output: OutputSelector = None) -> torch.Tensor:
    """The studied output of ``model`` on ``x`` as (N, O): called, selected, checked, flattened."""
    n = n_samples(x)
    return check_rows(select_output(call(model, x), output), n).reshape(n, -1)


def note_input(error: BaseException, x: Inputs, name: str = "x") -> BaseException:
    """``error`` (raised by a model's forward on ``x``) with a note naming ``x``'s structure, shapes and
    dtypes (its type and message are the model's own: a shape or dtype mismatch, an integer input
    to a layer that needs floats, or a failure of the model itself)."""
    error.add_note(f"raised by the model's forward pass on {name} = {describe(x)}")
    return error


def first_outputs(model: nn.Module, x: Inputs, output: OutputSelector = None, name: str = "x",
                  samples: int | None = None) -> torch.Tensor:
    """:func:`outputs` of the first ``samples`` rows of ``x`` (all: None) for the first forward pass of an
    entry point: the model's own error is raised with a note naming the input (:func:`note_input`);
    an output that is not one row per sample raises ValueError."""
    part = x if samples is None else rows(x, 0, samples)
    try:
        result = call(model, part)
    except Exception as error:
        raise note_input(error, x, name)
    n = n_samples(part)
    return check_rows(select_output(result, output), n).reshape(n, -1)
