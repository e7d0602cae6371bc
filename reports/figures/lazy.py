"""Figures of the lazy-regime diagnostics (docs/guide/lazy-regime.md): the linearised twin, the NTK
spectrum over training and sharpness. Same conventions as the other figures: one line per optimiser,
seeds as mean ± 1 sd, ``ValueError`` naming the
variable when it was not recorded (the report then lists the figure under "Not shown")."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from reports import plotting as p
from reports.figures.common import drawn_values, plot_checkpoints
from reports.figures.seeds import draw_group, seed_groups
from reports.runs import (alignment_note, as_combined, checkpoint_steps, has_values, kernel_alignment,
                          run_infos)

TOP_K = 10   # eigen-directions whose label alignment is shown (the number of classes of the shipped data sets)


def _recorded(ds: xr.Dataset, name: str, switch: str) -> None:
    """ValueError naming ``name`` and the config switch that records it, when no run has values."""
    if not has_values(ds, name):
        raise ValueError(f"analysis Dataset has no values for {name!r} (recorded by runs trained with {switch})")


def label_mode(ds: xr.Dataset, k: int = TOP_K) -> int:
    """The ``ntk_mode`` at which the cumulative label alignment is read: k, or the largest recorded."""
    modes = np.asarray(ds["ntk_mode"].values) if "ntk_mode" in ds.coords else np.array([], dtype=int)
    if modes.size == 0:
        raise ValueError("analysis Dataset has no 'ntk_mode' coordinate (no NTK spectrum)")
    return int(min(k, modes.max()))


def _finish(ax, x, ylabel: str, title: str) -> None:
    """Step axis, a value scale chosen from every value drawn (:func:`reports.plotting.set_value_scale`),
    the labels and a grid."""
    p.set_step_axis(ax, x if np.size(x) else np.array([0.0]))
    scale = p.set_value_scale(ax, drawn_values(ax))
    ax.set_ylabel(p.scale_label(ylabel, scale))
    ax.set_title(title)
    ax.grid(alpha=0.3)


def _two_panels(ds: xr.Dataset, name: str, switch: str):
    """(the combined Dataset, its runs, a figure of two panels, left, right) for a figure of ``name``;
    ValueError naming ``switch`` when no run recorded it."""
    ds = as_combined(ds)
    _recorded(ds, name, switch)
    fig, axes = p.new_figure(2, width=5.2)
    return ds, run_infos(ds), fig, axes[0][0], axes[0][1]


def linearized_twin(ds: xr.Dataset) -> Figure:
    """Left: ‖f_t − f_lin,t‖ / ‖f_t − f_0‖ on the test set (solid) and the probe set (dotted). Right:
    test accuracy of the network (solid) and of its linearised twin (dashed)."""
    ds, runs, fig, left, right = _two_panels(ds, "linearized_distance_test", "train.linearized = true")
    xs = [plot_checkpoints(left, ds, "linearized_distance_test", runs, ls="-"),
          plot_checkpoints(left, ds, "linearized_distance_probe", runs, ls=":", legend=False)]
    _finish(left, np.concatenate(xs), "‖f_t − f_lin,t‖ / ‖f_t − f_0‖", "distance to the linearised twin")
    scale = p.accuracy_scale(ds["linearized_test_acc"].values)
    twinned = [r for r in runs if np.isfinite(_run_values(ds, "linearized_test_acc", r.index)).any()]
    drawn = [plot_checkpoints(right, ds, name, twinned, scale=scale, ls=ls, legend=False)
             for name, ls in (("test_acc", "-"), ("linearized_test_acc", "--")) if name in ds]
    _finish(right, np.concatenate(drawn) if drawn else [], "test accuracy (%)", "network vs linearised twin")
    p.percent_axis(right)
    p.legend(fig, extra=p.style_key(("-", "test set (left), network (right)"), (":", "probe set (left)"),
                                    ("--", "linearised twin (right)")))
    return fig


def ntk_spectrum(ds: xr.Dataset) -> Figure:
    """Top eigenvalue λ₁ and condition number λ₁/λ_N of the probe-set NTK over training, the cumulative
    label alignment of its top-k eigen-directions, and the spectrum λ_i/λ₁ at the first (dotted) and
    last (solid) checkpoint."""
    ds = as_combined(ds)
    _recorded(ds, "ntk_eigenvalues", "train.ntk = true")
    runs = run_infos(ds)
    k = label_mode(ds)
    fig, axes = p.new_figure(2, 2, width=5.0, height=3.4)
    top, cond, align, spec = axes.ravel()
    for ax, name, sel, ylabel, title in (
            (top, "ntk_eigenvalues", {"ntk_mode": 1}, "λ₁", "largest NTK eigenvalue"),
            (cond, "ntk_condition_number", {}, "λ₁ / λ_N", "NTK condition number"),
            (align, "ntk_label_alignment", {"ntk_mode": k}, f"Σ_(i≤{k}) Σ_c (u_iᵀy_c)² / ‖Y‖²",
             f"label energy in the top {k} eigen-directions")):
        xs = plot_checkpoints(ax, ds, name, runs, **sel)
        _finish(ax, xs, ylabel, f"{title} ({kernel_alignment(ds)})"
                if name != "ntk_condition_number" else title)
    if not has_values(ds, "ntk_condition_number"):
        p.note(cond, "every kernel is numerically singular (λ_N ≤ N·eps·λ₁)")
    for group in seed_groups(runs):
        for which, ls in ((0, ":"), (-1, "-")):
            rows = [row for r in group if (row := _spectrum_at(ds, r.index, which)) is not None]
            if not rows:
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                ratios = np.nanmean(np.stack([row / row[0] for row in rows]), axis=0)
            modes = np.arange(1, ratios.size + 1)
            keep = np.isfinite(ratios)
            spec.plot(modes[keep], ratios[keep], color=group[0].color, ls=ls,
                      label="_" + p.short(group[0].optimizer))
    spec.set_xscale("log")
    spec.set_xlabel("eigen-direction i (log scale)")
    spec.set_ylabel(p.scale_label("λ_i / λ₁ (mean over seeds)", p.set_value_scale(spec, drawn_values(spec))))
    spec.set_title("NTK spectrum at initialisation and at the end")
    spec.grid(alpha=0.3)
    p.legend(fig, extra=p.style_key((":", "at initialisation (bottom right)"), ("-", "at the end (bottom right)")))
    return fig


def _run_values(ds: xr.Dataset, name: str, run: int) -> np.ndarray:
    """All checkpoint values of ``name`` for run ``run`` (NaN kept; all NaN when the variable is absent)."""
    if name not in ds.data_vars:
        return np.full(ds.sizes.get("checkpoint", 0), np.nan)
    da = ds[name].isel(run=run) if "run" in ds[name].dims else ds[name]
    return np.asarray(da.values, dtype=float)


def _spectrum_at(ds: xr.Dataset, run: int, which: int) -> np.ndarray | None:
    """The NTK eigenvalues of run ``run`` at its first (``which`` = 0) or last (−1) checkpoint that has
    them (NaN-padded to the longest probe of the Dataset); None when it has none."""
    da = ds["ntk_eigenvalues"].isel(run=run) if "run" in ds["ntk_eigenvalues"].dims else ds["ntk_eigenvalues"]
    values = np.asarray(da.transpose("checkpoint", "ntk_mode").values, dtype=float)
    rows = np.flatnonzero(np.isfinite(values).any(axis=1))
    return values[rows[which]] if rows.size else None


def sharpness_ratio(ds: xr.Dataset, run: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, sharpness / threshold) of one run at the checkpoints where both exist: λ_max(H) over the
    SGD threshold 2(1 + μ)/η, or Adam's preconditioned sharpness over (2 + 2β₁)/((1 − β₁)η)."""
    preconditioned = _run_values(ds, "preconditioned_sharpness", run)   # Adam: compared with its own threshold
    value = np.where(np.isfinite(preconditioned), preconditioned, _run_values(ds, "sharpness", run))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = value / _run_values(ds, "sharpness_threshold", run)
    steps = checkpoint_steps(ds, run)
    keep = np.isfinite(ratio) & np.isfinite(steps)
    return steps[keep], ratio[keep]


def sharpness(ds: xr.Dataset) -> Figure:
    """Left: λ_max of the loss Hessian (solid) and of the GGN (dashed) on the probe set. Right: the
    sharpness over the optimiser's stability threshold (1 = edge of stability; runs without a
    threshold, such as Gauss–Newton, are not drawn there)."""
    ds, runs, fig, left, right = _two_panels(ds, "sharpness", "train.sharpness = true")
    xs = [plot_checkpoints(left, ds, "sharpness", runs, ls="-")]
    if has_values(ds, "ggn_sharpness"):
        xs.append(plot_checkpoints(left, ds, "ggn_sharpness", runs, ls="--", legend=False))
    _finish(left, np.concatenate(xs), "largest eigenvalue", "sharpness: Hessian (solid), GGN (dashed)")
    drawn = []
    for group in seed_groups(runs):
        series = [(r, *sharpness_ratio(ds, r.index)) for r in group]
        drawn += draw_group(right, [s for s in series if s[2].size], legend=False)
    if drawn:
        right.axhline(1.0, color="0.3", lw=1, ls="--")
        _finish(right, np.concatenate(drawn), "sharpness / stability threshold",
                "distance to the edge of stability (1 = edge)")
    else:
        p.note(right, "no run has a stability threshold (SGD: 2/η; Adam: 38/η on its preconditioned sharpness)")
    p.legend(fig, extra=p.style_key(("-", "Hessian"), ("--", "GGN (left)")))
    return fig


def linearized_twin_caption(ds: xr.Dataset) -> str:
    """The caption; ValueError when no run recorded the twin (then the figure is not drawn either)."""
    ds = as_combined(ds)
    _recorded(ds, "linearized_distance_test", "train.linearized = true")
    probe = " (solid) and the probe set (dotted)" if has_values(ds, "linearized_distance_probe") else ""
    return ("The network against its first-order Taylor model at initialisation, f_lin(x; θ) = f(x; θ_0) + "
            "J(x; θ_0)(θ − θ_0), trained beside it on the same mini-batches by the same optimiser (Lee et al. 2019; "
            f"Chizat et al. 2019). Left: the relative distance ‖f_t − f_lin,t‖ / ‖f_t − f_0‖ of their outputs on the "
            f"test set{probe}; near 0 the network trains in the lazy (kernel) regime, near 1 its features moved. "
            "Right: test accuracy of the network (solid) and of its twin (dashed). Seeds: mean ± 1 sd.")


def ntk_spectrum_caption(ds: xr.Dataset) -> str:
    """The caption (k of the label-alignment panel as drawn, the kernel alignment in use); ValueError
    without an NTK spectrum."""
    ds = as_combined(ds)
    _recorded(ds, "ntk_eigenvalues", "train.ntk = true")
    k = label_mode(ds)
    singular = "" if has_values(ds, "ntk_condition_number") else " (every kernel here is numerically singular: not drawn)"
    return ("Eigen-decomposition Θ = Σ λ_i u_i u_iᵀ of the probe-set NTK at every checkpoint (Kopitkov & Indelman "
            "2020; Baratin et al. 2021). Top left: the largest eigenvalue λ₁. Top right: the condition number "
            f"λ₁/λ_N, which bounds the conditioning of the Gauss–Newton solve{singular}. Bottom left: the share "
            f"Σ_(i≤{k}) Σ_c (u_iᵀy_c)² / ‖Y‖² of the targets' energy in the top {k} eigen-directions — how much of "
            "the target the kernel's fastest directions carry. Bottom right: the spectrum λ_i/λ₁ at the first "
            f"(dotted) and last (solid) checkpoint. Seeds: mean ± 1 sd. {alignment_note(ds)}")


def sharpness_caption(ds: xr.Dataset) -> str:
    """The caption; ValueError when no run recorded sharpness."""
    ds = as_combined(ds)
    _recorded(ds, "sharpness", "train.sharpness = true")
    ggn = " (solid) and of the generalised Gauss–Newton matrix (dashed)" if has_values(ds, "ggn_sharpness") else ""
    return (f"Largest eigenvalue of the loss Hessian{ggn} on the probe set, by Lanczos (Cohen et al. 2021). Right: "
            "sharpness over the optimiser's stability threshold — λ_max(H) / (2/η) for SGD (2(1 + μ)/η with "
            "momentum μ) and Adam's preconditioned sharpness over its threshold (2 + 2β₁)/((1 − β₁)η), 38/η at "
            "β₁ = 0.9 (Cohen et al. 2022) — where 1 is the edge of stability; Gauss–Newton has no such threshold "
            "and is drawn on the left only. Seeds: mean ± 1 sd.")
