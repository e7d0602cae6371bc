"""Figures of hidden representations: CKA to initialisation, CKA between runs, linear probes."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from reports import plotting as p
from reports.figures.common import final_index, layer_grid, plot_by_layer, plot_checkpoints, require
from reports.figures.seeds import seed_groups
from reports.runs import as_combined, checkpoint_steps, has_values, run_infos


TEXT_CELLS = 12   # matrices up to this size get their values written in the cells


def cka_to_init(ds: xr.Dataset) -> Figure:
    """Linear CKA of each layer's representation to its value at initialisation, one panel per layer."""
    ds = as_combined(ds)
    require(ds, "cka_init")
    runs = run_infos(ds)
    fig, axes, layers = layer_grid(ds)
    low = min(0.0, float(np.nanmin(ds["cka_init"].values)))
    for ax, layer in zip(axes, layers):
        x = plot_checkpoints(ax, ds, "cka_init", runs, layer=layer)
        p.set_step_axis(ax, x)
        p.mark_divergence(ax, ds, runs)
        ax.set_ylim(low, 1.03)
        ax.set_title(f"layer {p.display_name(layer)}")
        ax.set_ylabel("linear CKA to initialisation")
        ax.grid(alpha=0.3)
    p.legend(fig)
    return fig


def cka_to_init_caption(ds: xr.Dataset) -> str:
    return ("Linear CKA (Kornblith et al. 2019) between each layer's representation of the probe set and the same "
            "layer at initialisation, one line per optimiser (seeds: mean ± 1 sd); 1 means unchanged up to rotation "
            "and isotropic scaling.")


def between_matrix(ds: xr.Dataset, k: int) -> tuple[np.ndarray, list[str], bool]:
    """(layer, n, n) CKA between runs at checkpoint ``k``, their labels, and whether it is per optimiser:
    with several seeds of an optimiser, the mean over run pairs of each pair of optimisers (diagonal:
    over pairs of different seeds of one optimiser; NaN for a single seed)."""
    runs = run_infos(ds)
    between = ds["cka_between"].transpose("checkpoint", "layer", "run", "run_").values[k]
    groups = seed_groups(runs)
    if all(len(g) == 1 for g in groups):
        return between, [p.short(r.label) for r in runs], False
    out = np.full((between.shape[0], len(groups), len(groups)), np.nan)
    for a, ga in enumerate(groups):
        for b, gb in enumerate(groups):
            pairs = [(i.index, j.index) for i in ga for j in gb if i.index != j.index]
            if pairs:
                values = np.stack([between[:, i, j] for i, j in pairs])
                count = np.isfinite(values).sum(axis=0)
                out[:, a, b] = np.where(count > 0, np.nansum(values, axis=0) / np.maximum(count, 1), np.nan)
    return out, [p.short(g[0].optimizer) for g in groups], True


def cka_between_optimizers(ds: xr.Dataset) -> Figure:
    """Heatmaps of linear CKA between runs (or between optimisers, averaged over seeds, when there are
    several seeds) at the last common checkpoint, one per layer."""
    ds = as_combined(ds)
    require(ds, "cka_between")
    runs = run_infos(ds)
    if len(runs) < 2:
        raise ValueError(f"cka_between needs at least two runs, the Dataset has {len(runs)}")
    k = final_index(ds["cka_between"].transpose("checkpoint", "layer", "run", "run_").values)
    matrix, labels, _ = between_matrix(ds, k)
    n = len(labels)
    cell = min(0.6, 6.5 / n)   # inches per cell: the panel stays within ~7 inches however many runs
    small = "small" if n <= TEXT_CELLS else "xx-small" if n > 24 else "x-small"
    label_room = 0.08 * max(len(label) for label in labels) * (1.0 if n <= TEXT_CELLS else 0.7)  # rotated ticks
    side = 0.6 + cell * n
    fig, axes, layers = layer_grid(ds, width=side + label_room + 0.4, height=side + label_room + 0.6)
    image = None
    for li, (ax, layer) in enumerate(zip(axes, layers)):
        image = ax.imshow(matrix[li], vmin=0, vmax=1, cmap="viridis")
        if n <= TEXT_CELLS:
            for i in range(n):
                for j in range(n):
                    if np.isfinite(matrix[li, i, j]):
                        ax.text(j, i, f"{matrix[li, i, j]:.2f}", ha="center", va="center", fontsize="small",
                                color="black" if matrix[li, i, j] > 0.6 else "white")
        ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=small)
        ax.set_yticks(range(n), labels, fontsize=small)
        ax.set_title(f"layer {p.display_name(layer)}")
    fig.colorbar(image, ax=list(axes), label="linear CKA", shrink=0.8)
    steps = {checkpoint_steps(ds, r.index)[k] for r in runs}
    when = f"step {int(steps.pop())}" if len(steps) == 1 and np.isfinite(min(steps)) else f"checkpoint {k}"
    fig.suptitle(f"representation similarity between runs at {when}")
    return fig


def cka_between_optimizers_caption(ds: xr.Dataset) -> str:
    ds = as_combined(ds)
    per_optimizer = any(len(g) > 1 for g in seed_groups(run_infos(ds)))
    what = ("between optimisers, each cell the mean over the pairs of their runs (the diagonal: between different "
            "seeds of one optimiser)" if per_optimizer else "between runs")
    return (f"Linear CKA between the representations that different runs learned, {what}, per layer, at the last "
            "checkpoint they share. Runs start from the same initialisation when they share a seed; a low value "
            "means the optimisers built different features.")


def probe_accuracy(ds: xr.Dataset) -> Figure:
    """Cross-validated linear-probe accuracy (classification runs) and R² (regression runs, ``probe_r2``)
    of each layer at initialisation (dotted) and at the end; one panel per quantity recorded."""
    ds = as_combined(ds)
    require(ds, "probe_accuracy")
    runs = run_infos(ds)
    names = [n for n in ("probe_accuracy", "probe_r2") if has_values(ds, n)] or ["probe_accuracy"]
    fig, axes = p.new_figure(len(names), width=6.0)
    key = []
    for ax, name in zip(axes[0], names):
        if name == "probe_accuracy":
            key = plot_by_layer(ax, ds, name, runs, scale=p.accuracy_scale(ds[name].values))
            ax.set_ylabel("linear-probe accuracy (%)")
            p.percent_axis(ax)
            ax.set_title("how linearly decodable the classes are, per layer")
        else:
            key = plot_by_layer(ax, ds, name, runs)   # runs without R² (classification) have no values: not drawn
            ax.set_ylabel("linear-probe R² (ridge regression)")
            ax.set_title("how linearly decodable the regression targets are, per layer")
    p.legend(fig, extra=key)
    return fig


def probe_accuracy_caption(ds: xr.Dataset) -> str:
    ds = as_combined(ds)
    text = ("Cross-validated accuracy of a logistic-regression probe trained on each layer's representation of the "
            "probe set, at initialisation (dotted) and at the end (solid), mean over seeds with ± 1 sd error bars: how "
            "much linearly usable class information each layer has built.")
    if has_values(ds, "probe_r2"):
        text += " Regression runs: the cross-validated R² of a ridge-regression probe instead (its own panel)."
    return text
