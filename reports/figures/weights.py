"""The weight-change figure: norm-weighted relative change, weights and biases apart."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from analysis.weights import grouped_relative_change
from reports import plotting as p
from reports.figures.common import draw_seeds, final_index, group_label, require, seed_groups
from reports.runs import as_combined, checkpoint_steps, dim_values, run_infos


def param_is_bias(ds: xr.Dataset) -> np.ndarray:
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
    require(ds, "weight_delta_norm", "weight_init_norm", "param_ndim")
    runs = run_infos(ds)
    params = dim_values(ds, "param")
    is_bias = param_is_bias(ds)
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
                xs += draw_seeds(ax, series, scale=100.0, ls=ls, suffix=f": {kind}")
        finals = []
        for r in group:
            rel = ds["weight_rel_change"].isel(run=r.index).transpose("checkpoint", "param").values
            finals.append(rel[final_index(rel)] * 100)
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
