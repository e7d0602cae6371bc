"""Shared optimiser plumbing of the GN solvers: torch.optim habits, settings validation, updates.

Both solvers subclass :class:`torch.optim.Optimizer`, so ``param_groups`` (one group holding every
trained parameter, with "lr" and the solver's settings), ``state_dict()`` / ``load_state_dict()``
(plain numbers and strings: loadable with ``torch.load(weights_only=True)``) and LR schedulers work
as usual. ``step`` takes the batch, ``step(x, y)``, instead of a closure.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def check_real(name: str, value: object, *, positive: bool = False, allow_none: bool = False) -> float | None:
    """``value`` as a float if it is a finite real ≥ 0 (> 0 when ``positive``); else ValueError/TypeError."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return value


class GaussNewtonOptimizer(torch.optim.Optimizer):
    """Base of :class:`ReversibleGN` and :class:`KernelGN`; subclasses set ``choices`` and ``reals``.

    ``choices`` maps a string setting to its allowed values; ``reals`` maps a numeric setting to
    (positive, allow_none). Every setting lives in the single parameter group next to "lr".
    """

    choices: dict[str, tuple[str, ...]] = {}
    reals: dict[str, tuple[bool, bool]] = {"lr": (True, False)}

    def __init__(self, model: torch.nn.Module, settings: dict[str, Any]) -> None:
        self.check_settings(settings)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(model).__name__} has no trainable parameters")
        super().__init__(params, dict(settings))
        self.model = model

    def check_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        for name, allowed in self.choices.items():
            if not isinstance(settings.get(name), str) or settings[name] not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {settings.get(name)!r}")
        for name, (positive, allow_none) in self.reals.items():
            settings[name] = check_real(name, settings.get(name), positive=positive, allow_none=allow_none)
        return settings

    @property
    def settings(self) -> dict[str, Any]:
        """The current settings (lr included) of the single parameter group, validated."""
        if len(self.param_groups) != 1:
            raise ValueError(f"{type(self).__name__} uses one parameter group, found {len(self.param_groups)}")
        group = self.param_groups[0]
        return self.check_settings({k: v for k, v in group.items() if k != "params"})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore lr and settings saved by :meth:`state_dict` (validated before anything changes)."""
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict):
            raise ValueError(f"state_dict must hold exactly one parameter group, got {groups!r}")
        self.check_settings({k: v for k, v in groups[0].items() if k != "params"})
        super().load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """No-op: GN steps do not use ``.grad``."""

    def apply_update(self, deltas: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """θ ← θ + δθ for every (parameter, δ) pair; returns ‖δθ‖."""
        total = 0.0
        with torch.no_grad():
            for param, delta in deltas:
                param.add_(delta)
                total += float(delta.square().sum())
        return math.sqrt(total)
