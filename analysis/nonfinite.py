"""Non-finite inputs of a run's analysis: where a diverged run's records stop being numbers.

Diverged runs are what researchers study, so one bad record never aborts an analysis. The rule
(applied by :mod:`analysis.checkpoint_metrics` and :func:`analysis.analyze`):

- every per-checkpoint quantity is NaN where one of its inputs is non-finite (NaN or ±inf) and is
  computed everywhere else: the NTK metrics at checkpoint t need Θ_t (and Θ_0 for the alignment to
  init, Θ_{t−1} for the velocity); CKA to init needs the layer's representation at t and at the
  first checkpoint, its effective rank and probe the one at t; a parameter's weight change needs the
  tensor at t and at the first checkpoint. Other checkpoints, layers and parameters are unaffected;
- per-step quantities (loss changes, transfer, copied losses) are NaN at a step whose inputs are
  non-finite (±inf read as NaN, :func:`analysis.overfitting.relative_change_percent`);
- where it met them is recorded: :class:`NonFiniteInputs` collects, per input ("checkpoints/ntk",
  "checkpoints/rep_<layer>", "params/<name>"), the checkpoint indices, and per metrics or checkpoint
  scalar the steps (from the store's ``nonfinite`` record of values the Recorder stored as NaN, and
  any ±inf found); the analysis carries the summary as attribute ``nonfinite`` (JSON) and the
  training step of the first non-finite input as the variable ``first_nonfinite_step`` (NaN when
  there is none), which the report marks in its figures (:mod:`reports.runs`).

NaN a store holds by design is not divergence: the parameter rows between the first and the latest
checkpoint of a ``params = "first_last"`` store (entirely NaN) are skipped, and of the scalars the
Recorder stored as NaN only the losses and accuracies the analysis uses count (a loop logs
``gn_residual`` = NaN for a first-order optimiser on purpose); ±inf found in any scalar counts.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np

FIRST_STEP = "first_nonfinite_step"
ATTR = "nonfinite"


def is_finite(array: np.ndarray) -> bool:
    """True when every entry of ``array`` is a finite number."""
    return bool(np.isfinite(array).all())


class NonFiniteInputs:
    """Where one analysis met non-finite inputs (see the module docstring)."""

    def __init__(self) -> None:
        self.checkpoints: dict[str, set[int]] = {}   # input → checkpoint indices
        self.steps: dict[str, set[int]] = {}         # scalar → training steps

    def check(self, array: np.ndarray, name: str, checkpoint: int) -> bool:
        """True when ``array`` (input ``name`` at checkpoint index ``checkpoint``) is finite; records it otherwise."""
        if is_finite(array):
            return True
        self.checkpoints.setdefault(name, set()).add(int(checkpoint))
        return False

    def add_steps(self, name: str, steps: Any) -> None:
        """Record training steps at which scalar ``name`` is non-finite."""
        steps = [int(s) for s in np.asarray(steps, dtype=np.int64).ravel()]
        if steps:
            self.steps.setdefault(name, set()).update(steps)

    def add_store_record(self, record: Any, checkpoint_steps: np.ndarray, metric_steps: np.ndarray,
                         inputs: dict[str, Any]) -> None:
        """Count the store's root attribute ``nonfinite`` ({group: {name: {"count", "steps": [[first, last],
        ...]}}}, values the Recorder stored as NaN): the stored steps of each range that the store holds,
        for the names of ``inputs`` (group → names the analysis uses as inputs) only — a loop may log NaN
        on purpose for a quantity it does not have (``gn_residual`` of a first-order run)."""
        if isinstance(record, str):
            try:
                record = json.loads(record)
            except ValueError:
                return
        if not isinstance(record, dict):
            return
        for group, names in record.items():
            held = metric_steps if group == "metrics" else checkpoint_steps
            if not isinstance(names, dict):
                continue
            for name, entry in names.items():
                if name not in inputs.get(group, ()):
                    continue
                ranges = entry.get("steps", []) if isinstance(entry, dict) else []
                for pair in ranges:
                    try:
                        first, last = int(pair[0]), int(pair[-1])
                    except (TypeError, ValueError, IndexError):
                        continue
                    self.add_steps(f"{group}/{name}", held[(held >= first) & (held <= last)])

    def first_step(self, checkpoint_steps: np.ndarray) -> float:
        """Training step of the first non-finite input (a checkpoint's step for checkpoint inputs); NaN if none."""
        candidates = [min(s) for s in self.steps.values() if s]
        for indices in self.checkpoints.values():
            first = min(indices)
            candidates.append(float(checkpoint_steps[first]) if first < len(checkpoint_steps) else np.nan)
        finite = [c for c in candidates if np.isfinite(c)]
        return float(min(finite)) if finite else float("nan")

    def summary(self, checkpoint_steps: np.ndarray) -> dict[str, Any]:
        """JSON-ready {"first_step", "first_checkpoint", "checkpoints": {input: [indices]},
        "steps": {scalar: [first, last, count]}}."""
        first_checkpoint = min((min(i) for i in self.checkpoints.values() if i), default=None)
        step = self.first_step(checkpoint_steps)
        return {"first_step": None if np.isnan(step) else int(step), "first_checkpoint": first_checkpoint,
                "checkpoints": {name: sorted(indices) for name, indices in sorted(self.checkpoints.items())},
                "steps": {name: [min(s), max(s), len(s)] for name, s in sorted(self.steps.items())}}

    def warn(self, where: str) -> None:
        """One RuntimeWarning naming what was non-finite (nothing when all inputs were finite)."""
        if not self.checkpoints and not self.steps:
            return
        parts = [f"{name} at checkpoint(s) {_short(sorted(i))}" for name, i in sorted(self.checkpoints.items())]
        parts += [f"{name} at {len(s)} step(s) from step {min(s)}" for name, s in sorted(self.steps.items())]
        warnings.warn(f"{where}: non-finite inputs ({'; '.join(parts)}); the quantities that use them are NaN "
                      "there, everything else is analysed", RuntimeWarning, stacklevel=3)


def _short(values: list[int], limit: int = 8) -> str:
    text = ", ".join(str(v) for v in values[:limit])
    return text + (f", … ({len(values)} in all)" if len(values) > limit else "")
