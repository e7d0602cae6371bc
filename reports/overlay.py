"""Overlaying several experiments in one panel, where their axes agree (``dynamics compare``).

Runs of every experiment are put in one analysis Dataset (:func:`overlay_dataset`): each run is
relabelled "<experiment>: <label>" and its optimiser "<experiment>: <optimiser>", so the run-order
palette gives every (experiment, optimiser) its own colour and seeds still form mean ± sd bands.
A figure of :data:`reports.catalog.FIGURES` is drawn from it once, all experiments in the same
panels, when its axes agree (:func:`axes_disagreement`):

- the same metric on the y axis: the same loss function (config ``train.loss``; absent counts as a
  value) for the loss figures, the same kernel alignment (centred or not) for the NTK figure;
- the same x-axis unit: training steps in every experiment (a run stored without checkpoint steps
  is drawn against the checkpoint index), and, for figures drawn per layer or per parameter tensor,
  the same layers / tensors.

Otherwise it is drawn per experiment, side by side, with a note saying which axis differs. The
between-runs CKA figure compares runs within one experiment and is always side by side.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from reports.runs import as_combined, kernel_alignment

# figure name -> (metric keys, x axes beyond steps); None: never overlaid
OVERLAY_AXES: dict[str, tuple[tuple[str, ...], tuple[str, ...]] | None] = {
    "loss_accuracy": (("train.loss",), ()),
    "batch_loss_change": (("train.loss",), ()),
    "ntk_dynamics": (("kernel_alignment",), ()),
    "cka_to_init": ((), ("layer",)),
    "cka_between_optimizers": None,
    "effective_rank": ((), ("layer",)),
    "probe_accuracy": ((), ("layer",)),
    "gn_residual": ((), ()),
    "weight_change": ((), ("param",)),
    "linearized_twin": ((), ()),
    "ntk_spectrum": (("kernel_alignment",), ()),
    "sharpness": (("train.loss",), ()),
}
UNIT_TEXT = {"step": "training step", "checkpoint": "checkpoint index"}


def x_unit(ds: xr.Dataset) -> str:
    """"step" when every run has its checkpoints' training steps, else "checkpoint" (their index)."""
    if "checkpoint_step" not in ds.coords:
        return "checkpoint"
    steps = np.asarray(ds.coords["checkpoint_step"].values, dtype=float)
    return "step" if steps.size and np.all(steps[np.isfinite(steps)] >= 0) else "checkpoint"


def _loss_function(ds: xr.Dataset) -> str:
    configs = [ds.attrs.get("configs"), ds.attrs.get("config")]
    for raw in configs:
        try:
            parsed = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            continue
        if not isinstance(parsed, dict):
            continue
        runs = parsed.values() if raw is configs[0] else [parsed]
        losses = sorted({str((c.get("train") or {}).get("loss", "(absent)")) if isinstance(c, dict) else "(absent)"
                         for c in runs})
        return " / ".join(losses)
    return "(absent)"


def _metric(ds: xr.Dataset, key: str) -> str:
    return kernel_alignment(ds) if key == "kernel_alignment" else _loss_function(ds)


def _labels(ds: xr.Dataset, dim: str) -> tuple[str, ...]:
    return tuple(str(v) for v in ds[dim].values) if dim in ds.coords else ()


def axes_disagreement(name: str, datasets: list[xr.Dataset], names: list[str]) -> str:
    """Empty when figure ``name`` may overlay ``datasets``; else why not (one sentence, plain text)."""
    if name not in OVERLAY_AXES or OVERLAY_AXES[name] is None:
        return "it compares the runs within one experiment"
    metrics, dims = OVERLAY_AXES[name]
    units = [x_unit(ds) for ds in datasets]
    if len(set(units)) > 1:
        return "their x axes differ (" + ", ".join(f"{n}: {UNIT_TEXT[u]}" for n, u in zip(names, units)) + ")"
    for key in metrics:
        values = [_metric(ds, key) for ds in datasets]
        if len(set(values)) > 1:
            what = "loss functions" if key == "train.loss" else "kernel alignments"
            return f"their {what} differ (" + ", ".join(f"{n}: {v}" for n, v in zip(names, values)) + ")"
    for dim in dims:
        if len({_labels(ds, dim) for ds in datasets}) > 1:
            return f"their models have different {'layers' if dim == 'layer' else 'parameter tensors'}"
    return ""


def overlay_dataset(datasets: list[xr.Dataset], names: list[str]) -> xr.Dataset:
    """The runs of every experiment in one Dataset along ``run`` (see the module docstring); per-step
    and per-checkpoint values NaN-padded where experiments differ in length."""
    parts = []
    for name, ds in zip(names, datasets):
        ds = as_combined(ds).drop_vars(["cka_between"], errors="ignore")
        ds = ds.drop_dims([d for d in ("run_",) if d in ds.dims])
        n = ds.sizes["run"]
        if "checkpoint_step" in ds.coords and "run" not in ds.coords["checkpoint_step"].dims:
            ds = ds.assign_coords(checkpoint_step=ds.coords["checkpoint_step"].expand_dims(run=n).transpose(
                "run", "checkpoint"))
        keep = {"checkpoint_step", "optimizer", "seed", "label"}
        ds = ds.drop_vars([c for c in ds.coords if c not in keep and c not in ds.dims])
        labels = [f"{name}: {v}" for v in (ds["label"].values if "label" in ds.coords else ds["run"].values)]
        optimizers = [f"{name}: {v}" for v in ds["optimizer"].values]
        parts.append(ds.assign_coords(run=labels, label=("run", labels), optimizer=("run", optimizers)))
    if "checkpoint_step" in set().union(*(p.coords for p in parts)):
        parts = [p if "checkpoint_step" in p.coords else p.assign_coords(
            checkpoint_step=(("run", "checkpoint"), np.full((p.sizes["run"], p.sizes.get("checkpoint", 0)), -1)))
            for p in parts]
    out = xr.concat([p.drop_attrs() for p in parts], dim="run", join="outer", coords="different",
                    compat="equals", data_vars="all", fill_value=np.nan)
    if "checkpoint_step" in out.coords:  # NaN-padded steps of shorter runs read as float
        out = out.assign_coords(checkpoint_step=out.coords["checkpoint_step"].astype(float))
    return out.assign_attrs(kernel_alignment=kernel_alignment(datasets[0]))
