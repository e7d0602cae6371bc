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

from analysis.weights import grouped_relative_change
from reports import plotting as p
from reports.runs import (RunInfo, as_combined, checkpoint_series, checkpoint_steps, dim_values,
                          has_values, kernel_alignment, phase_switches, run_infos, step_mean, step_series)


def _require(ds: xr.Dataset, *names: str) -> None:
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


def _draw_seeds(ax, series: list[tuple[RunInfo, np.ndarray, np.ndarray]], *, scale=1.0, ls="-",
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


def _plot_checkpoints(ax, ds, name, runs: list[RunInfo], scale=1.0, **sel) -> np.ndarray:
    """One line per optimiser of a checkpoint variable (seeds as mean ± sd, :func:`_draw_seeds`);
    returns all x values drawn."""
    xs = []
    for group in seed_groups(runs):
        series = [(r, *checkpoint_series(ds, name, r.index, **sel)) for r in group]
        series = [(r, x, y) for r, x, y in series if y.size]
        if series:
            xs += _draw_seeds(ax, series, scale=scale)
    return np.concatenate(xs) if xs else np.array([])


def _mark_phases(ax, ds: xr.Dataset, runs: list[RunInfo]) -> None:
    """A dashed vertical line in the run's colour at every optimiser switch (``phase`` changes), and a
    dotted one where the run's inputs became non-finite (:func:`reports.plotting.mark_divergence`)."""
    p.mark_divergence(ax, ds, runs)
    for r in runs:
        for step, index in phase_switches(ds, r.index):
            ax.axvline(step, color=r.color, ls="--", lw=1, alpha=0.8)
            ax.annotate(f"phase {index + 1}", (step, 1), xycoords=("data", "axes fraction"), fontsize="x-small",
                        color=r.color, rotation=90, va="top", ha="right")


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
        _mark_phases(ax, ds, runs)
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
    _mark_phases(ax, ds, runs)
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
        p.mark_divergence(ax, ds, runs)
        ax.set_ylabel(labels[name][0])
        ax.set_title(f"{labels[name][1]} ({kernel_alignment(ds)})")
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
        p.mark_divergence(ax, ds, runs)
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
    """Cross-validated linear-probe accuracy (classification runs) and R² (regression runs, ``probe_r2``)
    of each layer at initialisation (dotted) and at the end; one panel per quantity recorded."""
    ds = as_combined(ds)
    _require(ds, "probe_accuracy")
    runs = run_infos(ds)
    names = [n for n in ("probe_accuracy", "probe_r2") if has_values(ds, n)] or ["probe_accuracy"]
    fig, axes = p.new_figure(len(names), width=6.0)
    for ax, name in zip(axes[0], names):
        if name == "probe_accuracy":
            _plot_by_layer(ax, ds, name, runs, scale=p.accuracy_scale(ds[name].values))
            ax.set_ylabel("linear-probe accuracy (%)")
            p.percent_axis(ax)
            ax.set_title("how linearly decodable the classes are, per layer")
        else:
            _plot_by_layer(ax, ds, name, runs)   # runs without R² (classification) have no values: not drawn
            ax.set_ylabel("linear-probe R² (ridge regression)")
            ax.set_title("how linearly decodable the regression targets are, per layer")
        p.legend(ax, loc="best")
    return fig


def gn_residual(ds: xr.Dataset) -> Figure:
    """Relative residual ρ = ‖J δθ + α ε‖ / ‖α ε‖ of every Gauss–Newton step (log scale).

    Long runs are drawn with at most ~1500 points per line, each the worst (max) ρ of its steps.
    Several seeds of one optimiser: their mean per step with a band from the smallest to the largest ρ.
    """
    ds = as_combined(ds)
    _require(ds, "gn_residual")
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


def _param_is_bias(ds: xr.Dataset) -> np.ndarray:
    """Boolean per ``param``: True for tensors of at most one dimension (biases, gains)."""
    ndim = np.asarray(ds["param_ndim"].values, dtype=float)
    if ndim.ndim == 2:  # combined: (run, param), NaN where a run lacks the tensor
        ndim = np.nanmax(np.where(np.isfinite(ndim), ndim, -np.inf), axis=0)
    return ndim <= 1


def weight_change(ds: xr.Dataset) -> Figure:
    """Norm-weighted relative weight change, weights and biases apart, over training and per tensor.

    Left: ‖θ_t − θ_0‖ / ‖θ_0‖ over all weight matrices (solid) and over all bias vectors (dashed), each
    group taken as one vector (:func:`analysis.weights.grouped_relative_change`), so tiny biases do not
    dominate. Right: each tensor's own relative change at the last checkpoint (circles: weights,
    squares: biases). Seeds: mean ± sd.
    """
    ds = as_combined(ds)
    _require(ds, "weight_delta_norm", "weight_init_norm", "param_ndim")
    runs = run_infos(ds)
    params = dim_values(ds, "param")
    is_bias = _param_is_bias(ds)
    kinds = [(name, mask, ls) for name, mask, ls in (("weights", ~is_bias, "-"), ("biases", is_bias, "--"))
             if mask.any()]
    fig, axes = p.new_figure(2, width=5.4)
    ax, end_ax = axes[0]
    xs = []
    for group in seed_groups(runs):
        for kind, mask, ls in kinds:
            series = []
            for r in group:
                delta = ds["weight_delta_norm"].isel(run=r.index).transpose("checkpoint", "param").values[:, mask]
                init = ds["weight_init_norm"].isel(run=r.index).values[mask]
                y = grouped_relative_change(delta, init)
                x = checkpoint_steps(ds, r.index)
                keep = np.isfinite(x) & np.isfinite(y)
                if keep.any():
                    series.append((r, x[keep], y[keep]))
            if series:
                xs += _draw_seeds(ax, series, scale=100.0, ls=ls, suffix=f": {kind}")
        finals = []
        for r in group:
            rel = ds["weight_rel_change"].isel(run=r.index).transpose("checkpoint", "param").values
            finals.append(rel[_final_index(rel)] * 100)
        finals = np.stack(finals)
        count = np.isfinite(finals).sum(axis=0)
        end = np.where(count > 0, np.where(np.isfinite(finals), finals, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
        pos = np.arange(len(params))
        for kind, mask, marker in (("weights", ~is_bias, "o"), ("biases", is_bias, "s")):
            if mask.any():
                end_ax.plot(pos[mask], end[mask], color=group[0].color, ls="none", marker=marker,
                            label=f"{group_label(group)}: {kind}")
    p.set_step_axis(ax, np.concatenate(xs) if xs else np.array([0.0]))
    p.mark_divergence(ax, ds, runs)
    ax.set_ylabel("relative weight change (%)")
    ax.set_title("weights (solid) and biases (dashed), norm-weighted")
    ax.grid(alpha=0.3)
    p.legend(ax)
    end_ax.set_xticks(np.arange(len(params)), [p.display_name(n) for n in params], rotation=90, fontsize="x-small")
    end_ax.set_ylabel("change at the end (%)")
    end_ax.set_title("per parameter tensor (● weights, ■ biases)")
    end_ax.grid(alpha=0.3)
    return fig
