"""One function per figure: ``f(analysis: xarray.Dataset) -> matplotlib.figure.Figure``.

Each takes the analysis Dataset of docs/DESIGN.md §6 (combined, with dim ``run``; a single run's
Dataset is accepted too), draws with a fixed Okabe–Ito colour per optimiser (``reports.palette``)
and raises ``ValueError`` naming the variable when what it plots was not recorded at all. Runs
whose values are all NaN (e.g. ``gn_residual`` of a first-order run) are left out of that figure.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from reports import plotting as p
from reports.runs import (RunInfo, as_combined, checkpoint_series, checkpoint_steps, dim_values,
                          has_values, run_infos, step_mean, step_series)


def _require(ds: xr.Dataset, *names: str) -> None:
    missing = [n for n in names if not has_values(ds, n)]
    if missing:
        raise ValueError(f"analysis Dataset has no values for {', '.join(map(repr, missing))}")


def _plot_checkpoints(ax, ds, name, runs: list[RunInfo], scale=1.0, **sel) -> np.ndarray:
    """One line per run of a checkpoint variable; returns all x values drawn."""
    xs = []
    for r in runs:
        x, y = checkpoint_series(ds, name, r.index, **sel)
        if y.size:
            ax.plot(x, y * scale, color=r.color, ls=r.linestyle, marker="o", ms=3, label=p.short(r.label))
            xs.append(x)
    return np.concatenate(xs) if xs else np.array([])


def loss_accuracy(ds: xr.Dataset) -> Figure:
    """Train/test loss and accuracy at every checkpoint, one line per run (2×2 panels)."""
    ds = as_combined(ds)
    _require(ds, "train_loss", "test_loss", "train_acc", "test_acc")
    runs = run_infos(ds)
    scale = p.accuracy_scale(np.concatenate([ds["train_acc"].values.ravel(), ds["test_acc"].values.ravel()]))
    fig, axes = p.new_figure(2, 2, height=3.0)
    for ax, name, title in zip(axes.ravel(), ("train_loss", "test_loss", "train_acc", "test_acc"),
                               ("training loss", "test loss", "training accuracy", "test accuracy")):
        is_acc = name.endswith("acc")
        x = _plot_checkpoints(ax, ds, name, runs, scale if is_acc else 1.0)
        p.set_step_axis(ax, x)
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
    _require(ds, own, other)
    raw_own = "own_change" if has_values(ds, "own_change") else own
    raw_other = "other_change" if has_values(ds, "other_change") else other
    runs = run_infos(ds)
    fig, axes = p.new_figure(2, width=5.2)
    ax, bar_ax = axes[0]
    xs, means = [], []
    for r in runs:
        x1, y1 = p.thin(*step_series(ds, own, r.index))
        x2, y2 = p.thin(*step_series(ds, other, r.index))
        ax.plot(x1, y1, color=r.color, ls="-", label=f"{p.short(r.label)}: own batch")
        ax.plot(x2, y2, color=r.color, ls=":", lw=2, label=f"{p.short(r.label)}: other batch")
        xs.extend([x1, x2])
        means.append((r, step_mean(ds, raw_own, r.index), step_mean(ds, raw_other, r.index)))
    ax.axhline(0, color="0.5", lw=0.8)
    p.set_step_axis(ax, np.concatenate(xs))
    ax.set_ylabel("loss change by the step (%)")
    ax.set_title("loss change per step" + (" (moving average)" if own.endswith("smooth") else ""))
    ax.grid(alpha=0.3)
    p.legend(ax)
    pos = np.arange(len(means))
    bar_ax.bar(pos - 0.2, [m[1] for m in means], 0.4, color=[m[0].color for m in means], label="own batch")
    bar_ax.bar(pos + 0.2, [m[2] for m in means], 0.4, color=[m[0].color for m in means], alpha=0.45,
               hatch="//", label="other batch")
    bar_ax.axhline(0, color="0.5", lw=0.8)
    bar_ax.set_xticks(pos, [p.short(m[0].label) for m in means], rotation=30 if len(means) > 4 else 0)
    bar_ax.set_ylabel("mean loss change per step (%)")
    bar_ax.set_title("average over all steps")
    bar_ax.legend(fontsize="small", frameon=False)
    return fig


def ntk_dynamics(ds: xr.Dataset) -> Figure:
    """NTK alignment to initialisation and NTK velocity (distance between consecutive checkpoints)."""
    ds = as_combined(ds)
    _require(ds, "ntk_alignment_init")
    runs = run_infos(ds)
    names = ["ntk_alignment_init", "ntk_velocity", "ntk_target_alignment"]
    names = [n for n in names if has_values(ds, n)]
    labels = {"ntk_alignment_init": ("alignment A(Θ_t, Θ_0)", "NTK alignment to initialisation"),
              "ntk_velocity": ("velocity 1 − A(Θ_t, Θ_prev), log scale", "NTK velocity"),
              "ntk_target_alignment": ("alignment A(Θ_t, YYᵀ)", "NTK–target alignment")}
    fig, axes = p.new_figure(len(names))
    for ax, name in zip(axes[0], names):
        x = _plot_checkpoints(ax, ds, name, runs)
        p.set_step_axis(ax, x)
        ax.set_ylabel(labels[name][0])
        ax.set_title(labels[name][1])
        if name == "ntk_velocity" and np.nanmin(ds[name].values) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    p.legend(axes[0, 0])
    return fig


def _layer_grid(ds: xr.Dataset, width=3.6, height=3.0):
    layers = dim_values(ds, "layer")
    if not layers:
        raise ValueError("analysis Dataset has no 'layer' dim")
    ncols = min(4, len(layers))
    nrows = -(-len(layers) // ncols)
    fig, axes = p.new_figure(ncols, nrows, width=width, height=height)
    for ax in axes.ravel()[len(layers):]:
        ax.set_visible(False)
    return fig, axes.ravel()[: len(layers)], layers


def cka_to_init(ds: xr.Dataset) -> Figure:
    """Linear CKA of each layer's representation to its value at initialisation, one panel per layer."""
    ds = as_combined(ds)
    _require(ds, "cka_init")
    runs = run_infos(ds)
    fig, axes, layers = _layer_grid(ds)
    for ax, layer in zip(axes, layers):
        x = _plot_checkpoints(ax, ds, "cka_init", runs, layer=layer)
        p.set_step_axis(ax, x)
        ax.set_ylim(min(0.0, float(np.nanmin(ds["cka_init"].values))), 1.03)
        ax.set_title(f"layer {p.display_name(layer)}")
        ax.set_ylabel("linear CKA to initialisation")
        ax.grid(alpha=0.3)
    p.legend(axes[0])
    return fig


def _final_index(values: np.ndarray) -> int:
    """Last index along axis 0 whose slice is all finite (else any finite; else the last)."""
    for test in (np.all, np.any):
        ok = [i for i in range(values.shape[0]) if test(np.isfinite(values[i]))]
        if ok:
            return ok[-1]
    return values.shape[0] - 1


def cka_between_optimizers(ds: xr.Dataset) -> Figure:
    """Heatmaps of linear CKA between runs at the last common checkpoint, one per layer."""
    ds = as_combined(ds)
    _require(ds, "cka_between")
    runs = run_infos(ds)
    if len(runs) < 2:
        raise ValueError(f"cka_between needs at least two runs, the Dataset has {len(runs)}")
    between = ds["cka_between"].transpose("checkpoint", "layer", "run", "run_").values
    k = _final_index(between)
    fig, axes, layers = _layer_grid(ds, width=max(3.2, 1.0 + 0.75 * len(runs)), height=max(3.0, 0.9 + 0.7 * len(runs)))
    labels = [p.short(r.label) for r in runs]
    image = None
    for li, (ax, layer) in enumerate(zip(axes, layers)):
        matrix = between[k, li]
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(runs)):
            for j in range(len(runs)):
                if np.isfinite(matrix[i, j]):
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize="small",
                            color="black" if matrix[i, j] > 0.6 else "white")
        ax.set_xticks(range(len(runs)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(runs)), labels)
        ax.set_title(f"layer {p.display_name(layer)}")
    fig.colorbar(image, ax=list(axes), label="linear CKA between runs", shrink=0.8)
    steps = {checkpoint_steps(ds, r.index)[k] for r in runs}
    when = f"step {int(steps.pop())}" if len(steps) == 1 and np.isfinite(min(steps)) else f"checkpoint {k}"
    fig.suptitle(f"representation similarity between runs at {when}")
    return fig


def _plot_by_layer(ax, ds, name, runs, scale=1.0) -> None:
    """Value per layer at the first (dotted) and last (solid) checkpoint of every run."""
    layers = dim_values(ds, "layer")
    pos = np.arange(len(layers))
    for r in runs:
        values = ds[name].isel(run=r.index).transpose("checkpoint", "layer").values * scale
        first = next((v for v in values if np.isfinite(v).any()), None)
        last = values[_final_index(values)]
        if first is None:
            continue
        ax.plot(pos, last, color=r.color, ls="-", marker="o", label=f"{p.short(r.label)} (end)")
        ax.plot(pos, first, color=r.color, ls=":", marker=".", alpha=0.8, label=f"{p.short(r.label)} (init)")
    ax.set_xticks(pos, [p.display_name(layer) for layer in layers], rotation=30 if len(layers) > 4 else 0)
    ax.set_xlabel("layer (input → output)")
    ax.grid(alpha=0.3)


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
            p.set_step_axis(ax, _plot_checkpoints(ax, ds, name, runs))
            ax.set_title("NTK of the probe set")
            ax.grid(alpha=0.3)
        else:
            _plot_by_layer(ax, ds, name, runs)
            ax.set_title("hidden representations")
        ax.set_ylabel("entropy effective rank (dimensions)")
        p.legend(ax)
    return fig


def probe_accuracy(ds: xr.Dataset) -> Figure:
    """Cross-validated linear-probe accuracy of each layer at initialisation (dotted) and at the end."""
    ds = as_combined(ds)
    _require(ds, "probe_accuracy")
    runs = run_infos(ds)
    fig, axes = p.new_figure(1, width=6.0)
    ax = axes[0, 0]
    _plot_by_layer(ax, ds, "probe_accuracy", runs, scale=p.accuracy_scale(ds["probe_accuracy"].values))
    ax.set_ylabel("linear-probe accuracy (%)")
    p.percent_axis(ax)
    ax.set_title("how linearly decodable the classes are, per layer")
    p.legend(ax, loc="best")
    return fig


def gn_residual(ds: xr.Dataset) -> Figure:
    """Relative residual ρ = ‖J δθ + α ε‖ / ‖α ε‖ of every Gauss–Newton step (log scale).

    Long runs are drawn with at most ~1500 points per line, each the worst (max) ρ of its steps.
    """
    ds = as_combined(ds)
    _require(ds, "gn_residual")
    series = [(r, step_series(ds, "gn_residual", r.index)) for r in run_infos(ds)]
    fig, axes = p.new_figure(1, width=6.5)
    ax = axes[0, 0]
    xs = []
    for r, (steps, rho) in series:
        if not rho.size:  # a first-order run: no residual
            continue
        x, y = p.thin(steps, rho, reduce=np.max)
        ax.plot(x, np.maximum(y, 1e-300), color=r.color, ls=r.linestyle, lw=1, label=p.short(r.label))
        xs.append(x)
    ax.set_yscale("log")
    p.set_step_axis(ax, np.concatenate(xs))
    ax.set_ylabel("relative residual ρ (log scale)")
    ax.set_title("does the linearised step hit its output target?")
    ax.grid(alpha=0.3)
    p.legend(ax)
    return fig


def weight_change(ds: xr.Dataset) -> Figure:
    """‖θ_t − θ_0‖/‖θ_0‖: mean over parameters over training (band: min–max) and per parameter at the end."""
    ds = as_combined(ds)
    _require(ds, "weight_rel_change")
    runs = run_infos(ds)
    params = dim_values(ds, "param")
    fig, axes = p.new_figure(2, width=5.4)
    ax, end_ax = axes[0]
    xs = []
    pos = np.arange(len(params))
    for r in runs:
        values = ds["weight_rel_change"].isel(run=r.index).transpose("checkpoint", "param").values * 100
        steps = checkpoint_steps(ds, r.index)
        keep = np.isfinite(values).any(axis=1) & np.isfinite(steps)
        x = steps[keep]
        v = values[keep]
        ax.plot(x, np.nanmean(v, axis=1), color=r.color, ls=r.linestyle, marker="o", ms=3, label=p.short(r.label))
        ax.fill_between(x, np.nanmin(v, axis=1), np.nanmax(v, axis=1), color=r.color, alpha=0.15)
        end_ax.plot(pos, values[_final_index(values)], color=r.color, ls="none", marker="o", label=p.short(r.label))
        xs.append(x)
    p.set_step_axis(ax, np.concatenate(xs))
    ax.set_ylabel("relative weight change (%)")
    ax.set_title("all parameters (mean, band = min–max)")
    ax.grid(alpha=0.3)
    p.legend(ax)
    end_ax.set_xticks(pos, [p.display_name(n) for n in params], rotation=90, fontsize="x-small")
    end_ax.set_ylabel("change at the end (%)")
    end_ax.set_title("per parameter tensor")
    end_ax.grid(alpha=0.3)
    return fig
