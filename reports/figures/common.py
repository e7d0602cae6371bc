"""What every figure shares: the variables it needs, checkpoint series drawn one line per optimiser
(seeds aggregated by :mod:`reports.figures.seeds`), phase marks, per-layer panels, and what a caption
may say about a Dataset (which variables hold values, the model's dtype).

Conventions every figure follows (so a figure that works for 3 runs works for 30): one line per
optimiser, its seeds aggregated (:func:`reports.figures.seeds.draw_group`); value axes chosen by
:func:`reports.plotting.set_value_scale` (no finite value dropped); one legend per figure, below the
axes (:func:`reports.plotting.legend`), with line styles explained by grey key entries.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from reports import plotting as p
from reports.figures.seeds import draw_group, seed_groups
from reports.runs import RunInfo, checkpoint_series, dim_values, has_values, phase_switches


def require(ds: xr.Dataset, *names: str) -> None:
    """ValueError naming the variables of ``names`` that hold no finite value."""
    missing = [n for n in names if not has_values(ds, n)]
    if missing:
        raise ValueError(f"analysis Dataset has no values for {', '.join(map(repr, missing))}")


def plot_checkpoints(ax, ds, name, runs: list[RunInfo], scale=1.0, ls: str | None = None, legend: bool = True,
                     **sel) -> np.ndarray:
    """One line per optimiser of a checkpoint variable (seeds aggregated, :func:`draw_group`); returns
    all x values drawn. ``sel`` picks e.g. ``layer=``; ``ls`` and ``legend`` as in :func:`draw_group`
    (``legend`` False: a second line of the same optimiser, explained by a style key)."""
    xs = []
    for group in seed_groups(runs):
        series = [(r, *checkpoint_series(ds, name, r.index, **sel)) for r in group]
        xs += draw_group(ax, [(r, x, y) for r, x, y in series if y.size], scale=scale, ls=ls, legend=legend)
    return np.concatenate(xs) if xs else np.array([])


def drawn_values(ax) -> np.ndarray:
    """Every y value of the lines and bands drawn in ``ax`` (for choosing its value scale)."""
    parts = [np.asarray(line.get_ydata(), dtype=float).ravel() for line in ax.get_lines()]
    for collection in ax.collections:
        for path in collection.get_paths():
            parts.append(np.asarray(path.vertices[:, 1], dtype=float))
    return np.concatenate(parts) if parts else np.array([])


def mark_phases(ax, ds: xr.Dataset, runs: list[RunInfo]) -> None:
    """A dashed vertical line in the run's colour at every optimiser switch (``phase`` changes), one
    mark per optimiser and step however many seeds switched there; and a dotted one where the run's
    inputs became non-finite (:func:`reports.plotting.mark_divergence`)."""
    p.mark_divergence(ax, ds, runs)
    seen = set()
    for r in runs:
        for step, index in phase_switches(ds, r.index):
            if (r.optimizer, step) in seen:
                continue
            seen.add((r.optimizer, step))
            ax.axvline(step, color=r.color, ls="--", lw=1, alpha=0.8)
            ax.annotate(f"phase {index + 1}", (step, 1), xycoords=("data", "axes fraction"), fontsize="x-small",
                        color=r.color, rotation=90, va="top", ha="right")


def final_index(values: np.ndarray) -> int:
    """Last index along axis 0 whose slice is all finite (else any finite; else the last)."""
    for test in (np.all, np.any):
        ok = [i for i in range(values.shape[0]) if test(np.isfinite(values[i]))]
        if ok:
            return ok[-1]
    return values.shape[0] - 1


def layer_grid(ds: xr.Dataset, width=3.6, height=3.0):
    """(figure, axes, layers): one panel per layer, at most 4 per row."""
    layers = dim_values(ds, "layer")
    if not layers:
        raise ValueError("analysis Dataset has no 'layer' dim")
    ncols = min(4, len(layers))
    nrows = -(-len(layers) // ncols)
    fig, axes = p.new_figure(ncols, nrows, width=width, height=height)
    for ax in axes.ravel()[len(layers):]:
        ax.set_visible(False)
    return fig, axes.ravel()[: len(layers)], layers


def plot_by_layer(ax, ds, name, runs, scale=1.0) -> list[tuple[object, str]]:
    """Value per layer at the first (dotted) and last (solid) checkpoint with values, one line each per
    optimiser: the mean over its seeds with ± 1 sd error bars (several seeds). Returns the style key."""
    layers = dim_values(ds, "layer")
    pos = np.arange(len(layers))
    for group in seed_groups(runs):
        firsts, lasts = [], []
        for r in group:
            values = ds[name].isel(run=r.index).transpose("checkpoint", "layer").values * scale
            first = next((v for v in values if np.isfinite(v).any()), None)
            if first is not None:
                firsts.append(first)
                lasts.append(values[final_index(values)])
        if not firsts:
            continue
        color = group[0].color
        label = p.short(group[0].label) if len(firsts) == 1 else \
            f"{p.short(group[0].optimizer)} (mean ± sd, {len(firsts)} seeds)"
        for stack, ls, marker, text in ((lasts, "-", "o", label), (firsts, ":", ".", "_" + label)):
            mean, sd = _column_mean_sd(np.asarray(stack, dtype=float))
            ax.errorbar(pos, mean, yerr=sd, color=color, ls=ls, marker=marker, capsize=2 if sd is not None else 0,
                        label=text, alpha=1.0 if ls == "-" else 0.8)
    ax.set_xticks(pos, [p.display_name(layer) for layer in layers], rotation=30 if len(layers) > 4 else 0)
    ax.set_xlabel("layer (input → output)")
    ax.grid(alpha=0.3)
    return p.style_key(("-", "at the end"), (":", "at initialisation"))


def _column_mean_sd(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Per column of (seeds, n): the mean of the finite values and their sample sd (NaN where fewer
    than 2); sd None for a single seed."""
    finite = np.isfinite(stack)
    count = finite.sum(axis=0)
    mean = np.where(count > 0, np.where(finite, stack, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
    if stack.shape[0] < 2:
        return mean, None
    squares = np.where(finite, (stack - mean) ** 2, 0.0).sum(axis=0)
    return mean, np.where(count >= 2, np.sqrt(squares / np.maximum(count - 1, 1)), np.nan)


def model_dtype(ds: xr.Dataset) -> str | None:
    """The model dtype of the runs ("float32", "float64", ...) from the configs the analysis carries,
    when every run that states one states the same; None otherwise."""
    dtypes = set()
    for key in ("configs", "config"):
        raw = ds.attrs.get(key)
        try:
            parsed = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            continue
        if not isinstance(parsed, dict):
            continue
        configs = parsed.values() if key == "configs" else [parsed]
        for config in configs:
            dtype = (config.get("model") or {}).get("dtype") if isinstance(config, dict) else None
            if isinstance(dtype, str):
                dtypes.add(dtype)
        if dtypes:
            break
    return dtypes.pop() if len(dtypes) == 1 else None
