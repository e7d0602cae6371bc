"""Figures of hidden representations: CKA to initialisation, CKA between runs, linear probes."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from reports import plotting as p
from reports.figures.common import final_index, layer_grid, plot_by_layer, plot_checkpoints, require
from reports.runs import as_combined, checkpoint_steps, has_values, run_infos


def cka_to_init(ds: xr.Dataset) -> Figure:
    """Linear CKA of each layer's representation to its value at initialisation, one panel per layer."""
    ds = as_combined(ds)
    require(ds, "cka_init")
    runs = run_infos(ds)
    fig, axes, layers = layer_grid(ds)
    for ax, layer in zip(axes, layers):
        x = plot_checkpoints(ax, ds, "cka_init", runs, layer=layer)
        p.set_step_axis(ax, x)
        p.mark_divergence(ax, ds, runs)
        ax.set_ylim(min(0.0, float(np.nanmin(ds["cka_init"].values))), 1.03)
        ax.set_title(f"layer {p.display_name(layer)}")
        ax.set_ylabel("linear CKA to initialisation")
        ax.grid(alpha=0.3)
    p.legend(axes[0])
    return fig

def cka_between_optimizers(ds: xr.Dataset) -> Figure:
    """Heatmaps of linear CKA between runs at the last common checkpoint, one per layer."""
    ds = as_combined(ds)
    require(ds, "cka_between")
    runs = run_infos(ds)
    if len(runs) < 2:
        raise ValueError(f"cka_between needs at least two runs, the Dataset has {len(runs)}")
    between = ds["cka_between"].transpose("checkpoint", "layer", "run", "run_").values
    k = final_index(between)
    fig, axes, layers = layer_grid(ds, width=max(3.2, 1.0 + 0.75 * len(runs)), height=max(3.0, 0.9 + 0.7 * len(runs)))
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

def probe_accuracy(ds: xr.Dataset) -> Figure:
    """Cross-validated linear-probe accuracy (classification runs) and R² (regression runs, ``probe_r2``)
    of each layer at initialisation (dotted) and at the end; one panel per quantity recorded."""
    ds = as_combined(ds)
    require(ds, "probe_accuracy")
    runs = run_infos(ds)
    names = [n for n in ("probe_accuracy", "probe_r2") if has_values(ds, n)] or ["probe_accuracy"]
    fig, axes = p.new_figure(len(names), width=6.0)
    for ax, name in zip(axes[0], names):
        if name == "probe_accuracy":
            plot_by_layer(ax, ds, name, runs, scale=p.accuracy_scale(ds[name].values))
            ax.set_ylabel("linear-probe accuracy (%)")
            p.percent_axis(ax)
            ax.set_title("how linearly decodable the classes are, per layer")
        else:
            plot_by_layer(ax, ds, name, runs)   # runs without R² (classification) have no values: not drawn
            ax.set_ylabel("linear-probe R² (ridge regression)")
            ax.set_title("how linearly decodable the regression targets are, per layer")
        p.legend(ax, loc="best")
    return fig
