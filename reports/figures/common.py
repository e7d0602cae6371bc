"""What every figure shares: the variables it needs, seeds grouped per optimiser and drawn as mean ± sd,
checkpoint series, phase marks, per-layer panels."""

from __future__ import annotations

import numpy as np
import xarray as xr

from reports import plotting as p
from reports.runs import RunInfo, checkpoint_series, dim_values, has_values, phase_switches


def require(ds: xr.Dataset, *names: str) -> None:
    missing = [n for n in names if not has_values(ds, n)]
    if missing:
        raise ValueError(f"analysis Dataset has no values for {', '.join(map(repr, missing))}")

def seed_groups(runs: list[RunInfo]) -> list[list[RunInfo]]:
    """Runs grouped by optimiser (the seeds of one optimiser), in order of first appearance."""
    groups: dict[str, list[RunInfo]] = {}
    for r in runs:
        groups.setdefault(r.optimizer, []).append(r)
    return list(groups.values())

def seed_stack(series: list[tuple[np.ndarray, np.ndarray]]):
    """(x, values (seeds, len(x))) at the x values every seed has; None if there are none.

    ``series`` holds one (x, y) pair per seed, finite points only, x increasing
    (:func:`reports.runs.checkpoint_series`, :func:`reports.runs.step_series`).
    """
    common = series[0][0]
    for x, _ in series[1:]:
        common = np.intersect1d(common, x)
    if common.size == 0:
        return None
    return common, np.stack([y[np.searchsorted(x, common)] for x, y in series])

def group_label(group: list[RunInfo]) -> str:
    """Legend text of a group: the run's label for one seed, "<optimiser> (mean ± sd, n seeds)" otherwise."""
    if len(group) == 1:
        return p.short(group[0].label)
    return f"{p.short(group[0].optimizer)} (mean ± sd, {len(group)} seeds)"

def draw_seeds(ax, series: list[tuple[RunInfo, np.ndarray, np.ndarray]], *, scale=1.0, ls="-",
                suffix="") -> list[np.ndarray]:
    """Draw the seeds of one optimiser: a run's line, or for several seeds their mean with a ± 1 sd
    band at the x values all share (seeds sharing none are drawn one by one). ``series`` holds
    (run, x, y) with finite points only; returns the x arrays drawn."""
    stack = seed_stack([(x, y) for _, x, y in series]) if len(series) > 1 else None
    if stack is None:
        for r, x, y in series:
            ax.plot(x, y * scale, color=r.color, ls=ls if suffix else r.linestyle, marker="o", ms=3,
                    label=p.short(r.label) + suffix)
        return [x for _, x, _ in series]
    x, values = stack
    mean, sd = values.mean(axis=0), values.std(axis=0, ddof=1)
    color = series[0][0].color
    ax.plot(x, mean * scale, color=color, ls=ls, marker="o", ms=3, label=group_label([r for r, _, _ in series]) + suffix)
    ax.fill_between(x, (mean - sd) * scale, (mean + sd) * scale, color=color, alpha=0.2, lw=0)
    return [x]

def plot_checkpoints(ax, ds, name, runs: list[RunInfo], scale=1.0, **sel) -> np.ndarray:
    """One line per optimiser of a checkpoint variable (seeds as mean ± sd, :func:`draw_seeds`);
    returns all x values drawn."""
    xs = []
    for group in seed_groups(runs):
        series = [(r, *checkpoint_series(ds, name, r.index, **sel)) for r in group]
        series = [(r, x, y) for r, x, y in series if y.size]
        if series:
            xs += draw_seeds(ax, series, scale=scale)
    return np.concatenate(xs) if xs else np.array([])

def mark_phases(ax, ds: xr.Dataset, runs: list[RunInfo]) -> None:
    """A dashed vertical line in the run's colour at every optimiser switch (``phase`` changes), and a
    dotted one where the run's inputs became non-finite (:func:`reports.plotting.mark_divergence`)."""
    p.mark_divergence(ax, ds, runs)
    for r in runs:
        for step, index in phase_switches(ds, r.index):
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
    layers = dim_values(ds, "layer")
    if not layers:
        raise ValueError("analysis Dataset has no 'layer' dim")
    ncols = min(4, len(layers))
    nrows = -(-len(layers) // ncols)
    fig, axes = p.new_figure(ncols, nrows, width=width, height=height)
    for ax in axes.ravel()[len(layers):]:
        ax.set_visible(False)
    return fig, axes.ravel()[: len(layers)], layers

def plot_by_layer(ax, ds, name, runs, scale=1.0) -> None:
    """Value per layer at the first (dotted) and last (solid) checkpoint of every run."""
    layers = dim_values(ds, "layer")
    pos = np.arange(len(layers))
    for r in runs:
        values = ds[name].isel(run=r.index).transpose("checkpoint", "layer").values * scale
        first = next((v for v in values if np.isfinite(v).any()), None)
        last = values[final_index(values)]
        if first is None:
            continue
        ax.plot(pos, last, color=r.color, ls="-", marker="o", label=f"{p.short(r.label)} (end)")
        ax.plot(pos, first, color=r.color, ls=":", marker=".", alpha=0.8, label=f"{p.short(r.label)} (init)")
    ax.set_xticks(pos, [p.display_name(layer) for layer in layers], rotation=30 if len(layers) > 4 else 0)
    ax.set_xlabel("layer (input → output)")
    ax.grid(alpha=0.3)
