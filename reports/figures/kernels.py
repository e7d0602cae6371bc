"""Figures of the probe-set NTK: alignment to initialisation, velocity, target alignment, effective rank."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from reports import plotting as p
from reports.figures.common import plot_by_layer, plot_checkpoints, require
from reports.runs import as_combined, has_values, kernel_alignment, run_infos


def ntk_dynamics(ds: xr.Dataset) -> Figure:
    """NTK alignment to initialisation and NTK velocity (distance between consecutive checkpoints)."""
    ds = as_combined(ds)
    require(ds, "ntk_alignment_init")
    runs = run_infos(ds)
    names = ["ntk_alignment_init", "ntk_velocity", "ntk_target_alignment"]
    names = [n for n in names if has_values(ds, n)]
    labels = {"ntk_alignment_init": ("alignment A(Θ_t, Θ_0)", "NTK alignment to initialisation"),
              "ntk_velocity": ("velocity 1 − A(Θ_t, Θ_prev), log scale", "NTK velocity"),
              "ntk_target_alignment": ("alignment A(Θ_t, YYᵀ)", "NTK–target alignment")}
    fig, axes = p.new_figure(len(names))
    for ax, name in zip(axes[0], names):
        x = plot_checkpoints(ax, ds, name, runs)
        p.set_step_axis(ax, x)
        p.mark_divergence(ax, ds, runs)
        ax.set_ylabel(labels[name][0])
        ax.set_title(f"{labels[name][1]} ({kernel_alignment(ds)})")
        if name == "ntk_velocity" and np.nanmin(ds[name].values) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    p.legend(axes[0, 0])
    return fig

def effective_rank(ds: xr.Dataset) -> Figure:
    """Entropy effective rank of the NTK over training and of each layer's representation (init vs end)."""
    ds = as_combined(ds)
    panels = [n for n in ("ntk_effective_rank", "rep_effective_rank") if has_values(ds, n)]
    if not panels:
        raise ValueError("analysis Dataset has no values for 'ntk_effective_rank' or 'rep_effective_rank'")
    runs = run_infos(ds)
    fig, axes = p.new_figure(len(panels), width=5.0)
    for ax, name in zip(axes[0], panels):
        if name == "ntk_effective_rank":
            p.set_step_axis(ax, plot_checkpoints(ax, ds, name, runs))
            ax.set_title("NTK of the probe set")
            ax.grid(alpha=0.3)
        else:
            plot_by_layer(ax, ds, name, runs)
            ax.set_title("hidden representations")
        ax.set_ylabel("entropy effective rank (dimensions)")
        p.legend(ax)
    return fig
