"""Figures of training progress: loss and accuracy at checkpoints, the per-step loss change of each
batch (the paper's per-mini-batch overfitting) and the Gauss–Newton residual."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from reports import plotting as p
from reports.figures.common import mark_phases, plot_checkpoints, require, seed_groups, seed_stack
from reports.runs import as_combined, has_values, run_infos, step_mean, step_series


def loss_accuracy(ds: xr.Dataset) -> Figure:
    """Train/test loss and accuracy at every checkpoint, one line per run (2×2 panels)."""
    ds = as_combined(ds)
    require(ds, "train_loss", "test_loss", "train_acc", "test_acc")
    runs = run_infos(ds)
    scale = p.accuracy_scale(np.concatenate([ds["train_acc"].values.ravel(), ds["test_acc"].values.ravel()]))
    fig, axes = p.new_figure(2, 2, height=3.0)
    for ax, name, title in zip(axes.ravel(), ("train_loss", "test_loss", "train_acc", "test_acc"),
                               ("training loss", "test loss", "training accuracy", "test accuracy")):
        is_acc = name.endswith("acc")
        x = plot_checkpoints(ax, ds, name, runs, scale if is_acc else 1.0)
        p.set_step_axis(ax, x)
        mark_phases(ax, ds, runs)
        ax.set_title(title)
        if is_acc:
            ax.set_ylabel("accuracy (%)")
            p.percent_axis(ax)
        else:
            ax.set_ylabel("loss (mean per sample)")
            p.set_log_y_if_wide(ax, ds[name].values)
        ax.grid(alpha=0.3)
    p.legend(axes[0, 0])
    return fig

def batch_loss_change(ds: xr.Dataset) -> Figure:
    """Per-step relative loss change on the batch just trained on vs on another fixed batch.

    Long runs are drawn with at most ~1500 points per line (means over consecutive steps); the bar
    panel averages every step.
    """
    ds = as_combined(ds)
    own = "own_change_smooth" if has_values(ds, "own_change_smooth") else "own_change"
    other = "other_change_smooth" if has_values(ds, "other_change_smooth") else "other_change"
    require(ds, own, other)
    logs = has_values(ds, "own_log_change") and has_values(ds, "other_log_change")
    raw_own = "own_log_change" if logs else "own_change" if has_values(ds, "own_change") else own
    raw_other = "other_log_change" if logs else "other_change" if has_values(ds, "other_change") else other
    upcoming = "next_change_smooth" if has_values(ds, "next_change_smooth") else None
    runs = run_infos(ds)
    fig, axes = p.new_figure(2, width=5.2)
    ax, bar_ax = axes[0]
    xs, means = [], []
    for r in runs:
        x1, y1 = p.thin(*step_series(ds, own, r.index))
        x2, y2 = p.thin(*step_series(ds, other, r.index))
        ax.plot(x1, y1, color=r.color, ls="-", label=f"{p.short(r.label)}: own batch")
        ax.plot(x2, y2, color=r.color, ls=":", lw=2, label=f"{p.short(r.label)}: held-out batch")
        xs.extend([x1, x2])
        if upcoming is not None:
            x3, y3 = p.thin(*step_series(ds, upcoming, r.index))
            if y3.size:
                ax.plot(x3, y3, color=r.color, ls="--", lw=1, label=f"{p.short(r.label)}: next batch")
        means.append((r, step_mean(ds, raw_own, r.index), step_mean(ds, raw_other, r.index)))
    ax.axhline(0, color="0.5", lw=0.8)
    p.set_step_axis(ax, np.concatenate(xs))
    mark_phases(ax, ds, runs)
    ax.set_ylabel("loss change by the step (%)")
    ax.set_title("loss change per step" + (" (moving average)" if own.endswith("smooth") else ""))
    ax.grid(alpha=0.3)
    p.legend(ax)
    pos = np.arange(len(means))
    bar_ax.bar(pos - 0.2, [m[1] for m in means], 0.4, color=[m[0].color for m in means], label="own batch")
    bar_ax.bar(pos + 0.2, [m[2] for m in means], 0.4, color=[m[0].color for m in means], alpha=0.45,
               hatch="//", label="held-out batch")
    bar_ax.axhline(0, color="0.5", lw=0.8)
    bar_ax.set_xticks(pos, [p.short(m[0].label) for m in means], rotation=30 if len(means) > 4 else 0)
    bar_ax.set_ylabel("mean log-ratio per step (%)" if logs else "mean loss change per step (%)")
    bar_ax.set_title("average over all steps")
    bar_ax.legend(fontsize="small", frameon=False)
    return fig

def gn_residual(ds: xr.Dataset) -> Figure:
    """Relative residual ρ = ‖J δθ + α ε‖ / ‖α ε‖ of every Gauss–Newton step (log scale).

    Long runs are drawn with at most ~1500 points per line, each the worst (max) ρ of its steps.
    Several seeds of one optimiser: their mean per step with a band from the smallest to the largest ρ.
    """
    ds = as_combined(ds)
    require(ds, "gn_residual")
    fig, axes = p.new_figure(1, width=6.5)
    ax = axes[0, 0]
    xs = []
    for group in seed_groups(run_infos(ds)):
        series = [(r, *step_series(ds, "gn_residual", r.index)) for r in group]
        series = [(r, x, y) for r, x, y in series if y.size]  # first-order runs have no residual
        stack = seed_stack([(x, y) for _, x, y in series]) if len(series) > 1 else None
        if stack is None:
            for r, steps, rho in series:
                x, y = p.thin(steps, rho, reduce=np.max)
                ax.plot(x, np.maximum(y, 1e-300), color=r.color, ls=r.linestyle, lw=1, label=p.short(r.label))
                xs.append(x)
            continue
        steps, rho = stack
        x, y = p.thin(steps, rho.mean(axis=0), reduce=np.max)
        _, low = p.thin(steps, rho.min(axis=0), reduce=np.min)
        _, high = p.thin(steps, rho.max(axis=0), reduce=np.max)
        color = series[0][0].color
        ax.plot(x, np.maximum(y, 1e-300), color=color, lw=1,
                label=f"{p.short(group[0].optimizer)} (mean, band min–max of {len(series)} seeds)")
        ax.fill_between(x, np.maximum(low, 1e-300), np.maximum(high, 1e-300), color=color, alpha=0.2, lw=0)
        xs.append(x)
    ax.set_yscale("log")
    p.set_step_axis(ax, np.concatenate(xs))
    ax.set_ylabel("relative residual ρ (log scale)")
    ax.set_title("does the linearised step hit its output target?")
    ax.grid(alpha=0.3)
    p.legend(ax)
    return fig
