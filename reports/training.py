"""How trained the models are: the footing every verdict and finding stands on.

Per optimiser, over its seeds (mean, sd with ddof = 1, n): the final training and test accuracy (in %,
fractions × 100) and loss at each run's last checkpoint where they are finite, and the steps
(updates) and epochs trained. A claim about how optimisers *end* means something different for models
at 45 % accuracy than for models at 98 % (the paper's MNIST runs); the report states it above the
claims (:func:`training_sentence`) and ``findings.json`` holds it under ``training``.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from reports.plotting import accuracy_scale
from reports.runs import as_combined, checkpoint_steps, final_value, has_values, optimizer_title, run_infos

QUANTITIES = ("train_acc", "test_acc", "train_loss", "test_loss")


def _summary(values: list[float]) -> dict:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    return {"mean": float(v.mean()) if v.size else None, "sd": float(v.std(ddof=1)) if v.size > 1 else None,
            "n_seeds": int(v.size)}


def _last_step(ds: xr.Dataset, run: int) -> tuple[float, float]:
    """(step, epoch) of the run's last checkpoint with a finite value of any quantity (NaN if none)."""
    steps = checkpoint_steps(ds, run)
    finite = np.zeros(steps.shape, dtype=bool)
    for name in QUANTITIES:
        if has_values(ds, name):
            values = ds[name].isel(run=run).values if "run" in ds[name].dims else ds[name].values
            finite |= np.isfinite(np.asarray(values, dtype=float))
    finite &= np.isfinite(steps)
    if not finite.any():
        return math.nan, math.nan
    last = int(np.flatnonzero(finite)[-1])
    epochs = ds.coords.get("checkpoint_epoch")
    if epochs is None:
        return float(steps[last]), math.nan
    epochs = np.asarray((epochs.isel(run=run) if "run" in epochs.dims else epochs).values, dtype=float)
    return float(steps[last]), float(epochs[last])


def training_state(ds: xr.Dataset) -> dict:
    """optimiser → {"train_acc", "test_acc" (in %), "train_loss", "test_loss", "steps", "epochs"}, each a
    {"mean", "sd", "n_seeds"} summary over the optimiser's seeds (None where not recorded)."""
    ds = as_combined(ds)
    per: dict[str, dict[str, list[float]]] = {}
    scale = {name: accuracy_scale(ds[name].values) if name.endswith("acc") and has_values(ds, name) else 1.0
             for name in QUANTITIES}
    for run in run_infos(ds):
        entry = per.setdefault(run.optimizer, {name: [] for name in (*QUANTITIES, "steps", "epochs")})
        for name in QUANTITIES:
            entry[name].append(final_value(ds, name, run.index) * scale[name] if has_values(ds, name) else math.nan)
        step, epoch = _last_step(ds, run.index)
        entry["steps"].append(step)
        entry["epochs"].append(epoch)
    return {optimizer: {name: _summary(values) for name, values in entry.items()} for optimizer, entry in per.items()}


def _range(state: dict, name: str, digits: int = 0, unit: str = "") -> str | None:
    means = [e[name]["mean"] for e in state.values() if e[name]["mean"] is not None]
    if not means:
        return None
    low, high = min(means), max(means)
    return f"{low:.{digits}f}{unit}" if round(low, digits) == round(high, digits) else \
        f"{low:.{digits}f}–{high:.{digits}f}{unit}"


def training_sentence(state: dict) -> str:
    """One plain-text sentence: how far the models were trained and how well they fit, per optimiser."""
    if not state:
        return ""
    parts = []
    order = ("gn", "kgn", "sgd", "adam")
    for optimizer, entry in sorted(state.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        accs = [f"{entry[n]['mean']:.1f} % {label}" for n, label in (("train_acc", "train"), ("test_acc", "test"))
                if entry[n]["mean"] is not None]
        if accs:
            parts.append(f"{optimizer_title(optimizer)} {' / '.join(accs)}")
    steps, epochs = _range(state, "steps"), _range(state, "epochs", 0)
    when = f"after {steps} steps" + (f" ({epochs} epochs)" if epochs else "") if steps else "at the end"
    if not parts:
        return f"The runs were trained for {steps or 'an unknown number of'} steps; no accuracy was recorded."
    return (f"How trained the models are {when}, mean over seeds: accuracy {'; '.join(parts)}. The verdicts "
            "describe models at this stage of training, not converged ones.")
