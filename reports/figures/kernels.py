"""Figures of the probe-set NTK: alignment to initialisation, velocity, target alignment, effective
rank; each with its caption."""

from __future__ import annotations

import xarray as xr
from matplotlib.figure import Figure

from reports import plotting as p
from reports.figures.common import drawn_values, plot_by_layer, plot_checkpoints, require
from reports.runs import alignment_note, as_combined, divergence_step, has_values, kernel_alignment, run_infos

NTK_PANELS = {"ntk_alignment_init": ("alignment A(Θ_t, Θ_0)", "NTK alignment to initialisation"),
              "ntk_velocity": ("velocity 1 − A(Θ_t, Θ_prev)", "NTK velocity"),
              "ntk_target_alignment": ("alignment A(Θ_t, YYᵀ)", "NTK–target alignment")}


def ntk_dynamics(ds: xr.Dataset) -> Figure:
    """NTK alignment to initialisation and NTK velocity (distance between consecutive checkpoints)."""
    ds = as_combined(ds)
    require(ds, "ntk_alignment_init")
    runs = run_infos(ds)
    names = [n for n in NTK_PANELS if has_values(ds, n)]
    fig, axes = p.new_figure(len(names))
    for ax, name in zip(axes[0], names):
        x = plot_checkpoints(ax, ds, name, runs)
        p.set_step_axis(ax, x)
        p.mark_divergence(ax, ds, runs)
        scale = p.set_value_scale(ax, drawn_values(ax)) if name == "ntk_velocity" else "linear"
        ax.set_ylabel(p.scale_label(NTK_PANELS[name][0], scale))
        ax.set_title(f"{NTK_PANELS[name][1]} ({kernel_alignment(ds)})")
        ax.grid(alpha=0.3)
    p.legend(fig)
    return fig


def ntk_dynamics_caption(ds: xr.Dataset) -> str:
    ds = as_combined(ds)
    names = [n for n in NTK_PANELS if has_values(ds, n)]
    parts = ["alignment A(Θ_t, Θ_0) = ⟨Θ_t, Θ_0⟩_F / (‖Θ_t‖_F ‖Θ_0‖_F) to initialisation; close to 1 means the "
             "kernel barely moves (the lazy regime)"]
    if "ntk_velocity" in names:
        parts.append("velocity 1 − A between consecutive checkpoints")
    if "ntk_target_alignment" in names:
        parts.append("alignment with the target kernel YYᵀ (Y the one-hot labels of a classification run, the "
                     "targets of a regression run)")
    places = {1: ("",), 2: ("Left: ", "right: "), 3: ("Left: ", "middle: ", "right: ")}[len(parts)]
    panels = "; ".join(where + what for where, what in zip(places, parts))
    panels = panels[0].upper() + panels[1:]
    diverged = any(divergence_step(ds, r.index) is not None for r in run_infos(ds))
    marks = " A dotted vertical line marks the first step whose inputs were non-finite (a diverged run)." \
        if diverged else ""
    return (f"Empirical NTK Θ of a fixed probe set, traced over outputs, one line per optimiser (seeds: mean ± 1 sd). "
            f"{panels}.{marks} {alignment_note(ds)}")


def effective_rank(ds: xr.Dataset) -> Figure:
    """Entropy effective rank of the NTK over training and of each layer's representation (init vs end)."""
    ds = as_combined(ds)
    panels = [n for n in ("ntk_effective_rank", "rep_effective_rank") if has_values(ds, n)]
    if not panels:
        raise ValueError("analysis Dataset has no values for 'ntk_effective_rank' or 'rep_effective_rank'")
    runs = run_infos(ds)
    fig, axes = p.new_figure(len(panels), width=5.0)
    key = []
    for ax, name in zip(axes[0], panels):
        if name == "ntk_effective_rank":
            p.set_step_axis(ax, plot_checkpoints(ax, ds, name, runs))
            ax.set_title("NTK of the probe set")
            ax.grid(alpha=0.3)
        else:
            key = plot_by_layer(ax, ds, name, runs)
            ax.set_title("hidden representations")
        ax.set_ylabel("entropy effective rank (dimensions)")
    p.legend(fig, extra=key)
    return fig


def effective_rank_caption(ds: xr.Dataset) -> str:
    ds = as_combined(ds)
    parts = []
    if has_values(ds, "ntk_effective_rank"):
        parts.append("of the probe-set NTK over training")
    if has_values(ds, "rep_effective_rank"):
        parts.append("of each layer's centred representation at initialisation (dotted) and at the end (solid), "
                     "mean over seeds with ± 1 sd error bars")
    where = ("Left: " + parts[0] + ". Right: " + parts[1]) if len(parts) == 2 else parts[0][0].upper() + parts[0][1:]
    return (f"Entropy effective rank exp(−Σ pᵢ log pᵢ), pᵢ = σᵢ / Σσ (Roy & Vetterli 2007). {where}; lower means "
            "fewer directions in use.")
