"""The weight-change figure: norm-weighted relative change, weights and biases apart."""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from analysis.weights import grouped_relative_change
from reports import plotting as p
from reports.figures.common import final_index, require
from reports.figures.seeds import draw_group, seed_groups
from reports.runs import as_combined, checkpoint_steps, dim_values, run_infos


def param_is_bias(ds: xr.Dataset) -> np.ndarray:
    """Boolean per ``param``: True for tensors of at most one dimension (biases, gains)."""
    ndim = np.asarray(ds["param_ndim"].values, dtype=float)
    if ndim.ndim == 2:  # combined: (run, param), NaN where a run lacks the tensor
        ndim = np.nanmax(np.where(np.isfinite(ndim), ndim, -np.inf), axis=0)
    return ndim <= 1

def _kinds(ds: xr.Dataset) -> list[tuple[str, np.ndarray, str]]:
    """(name, parameter mask, line style) of the weights and biases the model has."""
    is_bias = param_is_bias(ds)
    return [(name, mask, ls) for name, mask, ls in (("weights", ~is_bias, "-"), ("biases", is_bias, "--"))
            if mask.any()]


def _kind_series(ds: xr.Dataset, group, mask: np.ndarray) -> list:
    """(run, steps, relative change of the tensors of ``mask`` taken as one vector) per seed of ``group``,
    finite points only (a group whose initial norm is 0, e.g. zero-initialised biases, has none)."""
    series = []
    for r in group:
        delta = ds["weight_delta_norm"].isel(run=r.index).transpose("checkpoint", "param").values[:, mask]
        init = ds["weight_init_norm"].isel(run=r.index).values[mask]
        with warnings.catch_warnings():   # a zero initial norm gives NaN, said in the caption instead
            warnings.simplefilter("ignore", RuntimeWarning)
            y = grouped_relative_change(delta, init)
        x = checkpoint_steps(ds, r.index)
        keep = np.isfinite(x) & np.isfinite(y)
        series.append((r, x[keep], y[keep]))
    return series


def weight_change(ds: xr.Dataset) -> Figure:
    """Norm-weighted relative weight change, weights and biases apart, over training and per tensor.

    Left: ‖θ_t − θ_0‖ / ‖θ_0‖ over all weight matrices (solid) and over all bias vectors (dashed), each
    group taken as one vector (:func:`analysis.weights.grouped_relative_change`), so tiny biases do not
    dominate; a group whose initial norm is 0 (zero-initialised biases) has no relative change and is
    not drawn. Right: each tensor's own relative change at the last checkpoint (circles: weights,
    squares: biases). Seeds: mean ± sd.
    """
    ds = as_combined(ds)
    require(ds, "weight_delta_norm", "weight_init_norm", "param_ndim")
    runs = run_infos(ds)
    params = dim_values(ds, "param")
    is_bias = param_is_bias(ds)
    kinds = _kinds(ds)
    fig, axes = p.new_figure(2, width=5.4)
    ax, end_ax = axes[0]
    xs = []
    for group in seed_groups(runs):
        labelled = False
        for kind, mask, ls in kinds:
            drawn = draw_group(ax, _kind_series(ds, group, mask), scale=100.0, ls=ls, legend=not labelled)
            labelled = labelled or bool(drawn)
            xs += drawn
        finals = []
        for r in group:
            rel = ds["weight_rel_change"].isel(run=r.index).transpose("checkpoint", "param").values
            finals.append(rel[final_index(rel)] * 100)
        finals = np.stack(finals)
        count = np.isfinite(finals).sum(axis=0)
        end = np.where(count > 0, np.where(np.isfinite(finals), finals, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
        pos = np.arange(len(params))
        for mask, marker in ((~is_bias, "o"), (is_bias, "s")):
            if mask.any():
                end_ax.plot(pos[mask], end[mask], color=group[0].color, ls="none", marker=marker,
                            label="" if labelled else f"{p.short(group[0].optimizer)}")
    p.set_step_axis(ax, np.concatenate(xs) if xs else np.array([0.0]))
    p.mark_divergence(ax, ds, runs)
    ax.set_ylabel("relative weight change (%)")
    ax.set_title("weights (solid) and biases (dashed), norm-weighted")
    ax.grid(alpha=0.3)
    end_ax.set_xticks(np.arange(len(params)), [p.display_name(n) for n in params], rotation=90, fontsize="x-small")
    end_ax.set_ylabel("change at the end (%)")
    end_ax.set_title("per parameter tensor (● weights, ■ biases)")
    end_ax.grid(alpha=0.3)
    key = p.style_key(*[(ls, f"{kind}, norm-weighted (left)") for kind, _, ls in kinds])
    p.legend(fig, extra=key)
    return fig


def weight_change_caption(ds: xr.Dataset) -> str:
    """The caption, saying which groups are drawn and why a group is not."""
    ds = as_combined(ds)
    groups = seed_groups(run_infos(ds))
    drawn = {kind: any(len(x) for g in groups for _, x, _ in _kind_series(ds, g, mask)) for kind, mask, _ in _kinds(ds)}
    text = ("Relative distance of the trained parameters from initialisation, ‖θ_t − θ_0‖ / ‖θ_0‖, in %. Left: over "
            "training, each group of tensors norm-weighted as one vector, sqrt(Σ‖Δθ_i‖²)/sqrt(Σ‖θ_i,0‖²), so small "
            "tensors do not dominate: ")
    text += " and ".join(f"all {kind} ({'solid' if kind == 'weights' else 'dashed'})" for kind, shown in drawn.items()
                         if shown) or "no group"
    text += ". Right: each tensor at the last checkpoint (circles: weights, squares: biases). With several seeds: mean ± 1 sd."
    hidden = [kind for kind, shown in drawn.items() if not shown]
    if hidden:
        text += (f" The {' and '.join(hidden)} start at zero (‖θ_0‖ = 0, e.g. zero-initialised biases), so their "
                 "relative change is undefined and they are not drawn.")
    return text
