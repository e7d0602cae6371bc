"""Calling a model with other values for its trained parameters — the one place that does it.

``torch.func`` transforms and forward-mode AD need the model evaluated at parameter values they
supply (``torch.func.functional_call``). Two kinds of sharing make the obvious call wrong:

- one module registered under two names (``self.branch = nn.Sequential(self.shared, ...)``): its
  parameter has two paths; substituting both swaps the same attribute twice, and torch restores
  them in an order that leaves the substitute (a functorch wrapper) inside the user's model;
- one parameter held by two modules (weight tying: ``readout.weight = embed.weight``): substituting
  one path leaves the other module computing with the original tensor, whose derivative is lost.

:func:`parameter_slots` lists every (module, attribute) slot once — each module object under its
first name — with the name of the parameter it holds (the first ``named_parameters`` name), and
:func:`call` substitutes every slot of a trained parameter, with ``tie_weights=False``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

from dynamics import inputs
from dynamics.inputs import Inputs, OutputSelector


def parameter_slots(model: nn.Module) -> dict[str, str]:
    """Slot path (``module.attribute``, each module object once) → name of the parameter held there."""
    names = {id(p): name for name, p in model.named_parameters()}
    slots = {}
    for module_name, module in model.named_modules():
        for attribute, param in module._parameters.items():
            if param is not None and id(param) in names:
                slots[f"{module_name}.{attribute}" if module_name else attribute] = names[id(param)]
    return slots


def call(model: nn.Module, values: Mapping[str, torch.Tensor], x: Inputs, output: OutputSelector = None,
         slots: dict[str, str] | None = None) -> torch.Tensor:
    """The studied output (:func:`dynamics.inputs.select_output`, not reshaped) of ``model`` on ``x`` with
    the parameters named in ``values`` (``named_parameters`` names) replaced by those tensors, in every
    slot that holds them (``slots``: :func:`parameter_slots`, computed when None)."""
    slots = parameter_slots(model) if slots is None else slots
    substitutes = {path: values[name] for path, name in slots.items() if name in values}
    args, kwargs = inputs.call_arguments(x)
    result = functional_call(model, substitutes, args, kwargs, tie_weights=False, strict=False)
    return inputs.select_output(result, output)
