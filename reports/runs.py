"""Reading the analysis Dataset (docs/DESIGN.md §6 "Analysis") the way figures and findings need it.

The combined Dataset has dims ``run``, ``checkpoint``, ``step``, ``layer``, ``param`` (and ``run_`` for
``cka_between``), coordinates ``optimizer``/``seed``/``label`` on ``run`` and ``checkpoint_step`` on
``checkpoint`` (1-D, or 2-D ``(run, checkpoint)`` when runs were checkpointed at different steps).
Runs of different lengths are NaN-padded when combined, so every series here drops non-finite points.
A single run's Dataset (no ``run`` dim) is accepted and given a one-element ``run`` dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from reports.palette import assign_colors, seed_linestyle


@dataclass(frozen=True)
class RunInfo:
    """One run of a combined analysis Dataset: its position, names and plotting style."""

    index: int
    label: str
    optimizer: str
    seed: int | None
    color: str
    linestyle: str


def as_combined(ds: xr.Dataset) -> xr.Dataset:
    """Return ``ds`` with a ``run`` dim (adding one of length 1, named from attrs, when absent)."""
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"expected an xarray.Dataset of analysis results, got {type(ds).__name__}")
    if "run" in ds.dims:
        if ds.sizes["run"] == 0:
            raise ValueError("analysis Dataset has no runs (dim 'run' has length 0)")
        return ds
    optimizer = str(ds.attrs.get("optimizer", "run"))
    seed = ds.attrs.get("seed")
    label = str(ds.attrs.get("label", optimizer))
    out = ds.expand_dims(run=[label])
    coords = {"optimizer": ("run", [optimizer]), "label": ("run", [label])}
    if seed is not None:
        coords["seed"] = ("run", [int(seed)])
    return out.assign_coords(coords)


def _run_coord(ds: xr.Dataset, name: str, i: int):
    if name in ds.coords and ds.coords[name].dims == ("run",):
        return ds.coords[name].values[i]
    return None


def run_infos(ds: xr.Dataset) -> list[RunInfo]:
    """Runs in Dataset order; colour by optimiser (distinct per optimiser, assigned in order of first
    appearance: :func:`reports.palette.assign_colors`), line style by the seed's rank within its optimiser."""
    ds = as_combined(ds)
    raw = []
    for i in range(ds.sizes["run"]):
        run_value = ds["run"].values[i] if "run" in ds.coords else i
        label = _run_coord(ds, "label", i)
        optimizer = _run_coord(ds, "optimizer", i)
        seed = _run_coord(ds, "seed", i)
        label = str(label) if label is not None else str(run_value)
        optimizer = str(optimizer) if optimizer is not None else label
        seed = int(seed) if seed is not None and np.isfinite(float(seed)) and int(seed) >= 0 else None
        raw.append((i, label, optimizer, seed))
    colors = assign_colors([optimizer for _, _, optimizer, _ in raw])
    infos = []
    for i, label, optimizer, seed in raw:
        same = sorted({s if s is not None else -1 for _, _, o, s in raw if o == optimizer})
        rank = same.index(seed if seed is not None else -1)
        infos.append(RunInfo(i, label, optimizer, seed, colors[optimizer], seed_linestyle(rank)))
    return infos


def has_values(ds: xr.Dataset, name: str) -> bool:
    """True when variable ``name`` exists and holds at least one finite value."""
    if name not in ds.data_vars:
        return False
    values = np.asarray(ds[name].values, dtype=float)
    return bool(np.isfinite(values).any())


def _select(ds: xr.Dataset, name: str, run: int, **sel) -> xr.DataArray:
    if name not in ds.data_vars:
        raise ValueError(f"analysis Dataset has no variable {name!r}; it has {sorted(ds.data_vars)}")
    da = ds[name].isel(run=run) if "run" in ds[name].dims else ds[name]
    return da.sel(**sel) if sel else da


def checkpoint_steps(ds: xr.Dataset, run: int) -> np.ndarray:
    """Training step of each checkpoint of run ``run`` (the checkpoint index if no step is stored)."""
    if "checkpoint_step" in ds.coords:
        steps = ds.coords["checkpoint_step"]
        if "run" in steps.dims:
            steps = steps.isel(run=run)
        return np.asarray(steps.values, dtype=float)
    return np.asarray(ds["checkpoint"].values, dtype=float)


def checkpoint_series(ds: xr.Dataset, name: str, run: int, **sel) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a checkpoint variable for one run (``sel`` picks e.g. ``layer=``), finite points only."""
    da = _select(ds, name, run, **sel)
    if da.dims != ("checkpoint",):
        raise ValueError(f"{name!r} with selection {sel} has dims {da.dims}, expected ('checkpoint',)")
    x, y = checkpoint_steps(ds, run), np.asarray(da.values, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def step_series(ds: xr.Dataset, name: str, run: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a per-step variable for one run, finite points only."""
    da = _select(ds, name, run)
    if da.dims != ("step",):
        raise ValueError(f"{name!r} has dims {da.dims}, expected ('step',)")
    x = np.asarray(ds["step"].values, dtype=float)
    y = np.asarray(da.values, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def final_value(ds: xr.Dataset, name: str, run: int, **sel) -> float:
    """Value at the run's last checkpoint where ``name`` is finite (NaN if it never is)."""
    _, y = checkpoint_series(ds, name, run, **sel)
    return float(y[-1]) if y.size else float("nan")


def step_mean(ds: xr.Dataset, name: str, run: int) -> float:
    """Mean over all finite steps of a per-step variable (NaN if none)."""
    _, y = step_series(ds, name, run)
    return float(y.mean()) if y.size else float("nan")


def phase_switches(ds: xr.Dataset, run: int) -> list[tuple[float, int]]:
    """(step, new phase index) where run ``run`` switched optimiser (``phase`` changes between steps);
    empty when the run has one phase or recorded none. The step is the first update of the new phase."""
    if "phase" not in ds.data_vars or not has_values(ds, "phase"):
        return []
    steps, phase = step_series(ds, "phase", run)
    if phase.size < 2:
        return []
    where = np.flatnonzero(np.diff(phase) != 0) + 1
    return [(float(steps[i]), int(phase[i])) for i in where]


def dim_values(ds: xr.Dataset, dim: str) -> list[str]:
    """Labels along ``layer`` or ``param`` (empty when the dim is absent)."""
    if dim not in ds.dims:
        return []
    return [str(v) for v in ds[dim].values] if dim in ds.coords else [str(i) for i in range(ds.sizes[dim])]


def divergence_step(ds: xr.Dataset, run: int) -> float | None:
    """Training step of run ``run``'s first non-finite input (``first_nonfinite_step`` of the analysis,
    :mod:`analysis.nonfinite`), or None when every input was finite or the analysis does not say."""
    if "first_nonfinite_step" not in ds.data_vars:
        return None
    value = ds["first_nonfinite_step"]
    value = float(value.isel(run=run) if "run" in value.dims else value)
    return value if np.isfinite(value) else None


def divergence_notes(ds: xr.Dataset) -> list[str]:
    """One sentence per run with non-finite inputs: from which step, which inputs, and what the figures show."""
    ds = as_combined(ds)
    details = _nonfinite_details(ds)
    notes = []
    for r in run_infos(ds):
        step = divergence_step(ds, r.index)
        if step is None:
            continue
        record = details.get(r.label, {})
        inputs = sorted({*record.get("checkpoints", {}), *record.get("steps", {})})
        what = f" ({', '.join(inputs[:6])}{', …' if len(inputs) > 6 else ''})" if inputs else ""
        notes.append(f"{r.label}: non-finite values (NaN or inf) from step {step:g}{what}. Every quantity that "
                     "uses them is NaN there and is not drawn; the rest of the run is analysed. A dotted vertical "
                     "line marks that step in the figures drawn over training steps.")
    return notes


def _nonfinite_details(ds: xr.Dataset) -> dict[str, dict]:
    """label → the analysis' ``nonfinite`` record (combined: a JSON map label → record; one run: the record)."""
    import json

    try:
        parsed = json.loads(ds.attrs.get("nonfinite", "{}"))
    except (TypeError, ValueError):
        return {}
    if not isinstance(parsed, dict):
        return {}
    if "first_step" in parsed:   # a single run's record
        return {str(ds["run"].values[0]): parsed}
    return {str(k): v for k, v in parsed.items() if isinstance(v, dict)}


ALIGNMENT_TEXT = {
    "uncentred": "uncentred kernel alignment A(K₁, K₂) = ⟨K₁, K₂⟩_F / (‖K₁‖_F ‖K₂‖_F)",
    "centred": "centred kernel alignment A(HK₁H, HK₂H), H = I − 11ᵀ/N (Cortes et al. 2012)",
}


def kernel_alignment(ds: xr.Dataset) -> str:
    """"centred" or "uncentred": which kernel alignment the analysis holds (attr ``kernel_alignment``;
    an analysis without it was computed before the option existed, so uncentred)."""
    kind = str(ds.attrs.get("kernel_alignment", "uncentred"))
    if kind not in ALIGNMENT_TEXT:
        raise ValueError(f"analysis attr kernel_alignment = {kind!r} is not one of {sorted(ALIGNMENT_TEXT)}")
    return kind


def alignment_note(ds: xr.Dataset) -> str:
    """The sentence saying which kernel alignment a page shows and how to get the other one."""
    kind = kernel_alignment(ds)
    other = "without --centered-alignment" if kind == "centred" else "with --centered-alignment"
    return (f"NTK alignments here are the {ALIGNMENT_TEXT[kind]}; `dynamics analyze` and `dynamics report` "
            f"{other} give the {'uncentred' if kind == 'centred' else 'centred'} one.")


_OPTIMIZER_TITLES = {"gn": "GN", "kgn": "KGN", "sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def optimizer_title(name: str) -> str:
    """How an optimiser is named in prose: ``gn`` -> ``GN``, ``adam`` -> ``Adam``; other names unchanged."""
    return _OPTIMIZER_TITLES.get(str(name).lower(), str(name))
