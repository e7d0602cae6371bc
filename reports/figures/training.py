"""Figures of training progress: loss and accuracy, the per-step loss change of each batch (the
paper's per-mini-batch overfitting) and the Gauss–Newton residual; each with its caption, derived from
what the figure draws."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from reports import plotting as p
from reports.figures.common import drawn_values, mark_phases, model_dtype, plot_checkpoints, require
from reports.figures.seeds import draw_group, seed_groups
from reports.runs import as_combined, has_values, run_infos, step_mean, step_series

LOSS_PANELS = (("train_loss", "training loss", "loss (mean per sample)"),
               ("test_loss", "test loss", "loss (mean per sample)"),
               ("train_acc", "training accuracy", "accuracy (%)"),
               ("test_acc", "test accuracy", "accuracy (%)"))
NAMES = {"train_loss": "training loss", "test_loss": "test loss", "train_acc": "training accuracy",
         "test_acc": "test accuracy", "loss": "per-step batch loss"}


def loss_panels(ds: xr.Dataset) -> list[str]:
    """The panels the loss/accuracy figure draws: each of train_loss, test_loss, train_acc, test_acc
    that holds values, with the per-step batch ``loss`` standing in for a training loss that was not
    evaluated at checkpoints. ValueError when none of them was recorded."""
    panels = [name for name, _, _ in LOSS_PANELS if has_values(ds, name)]
    if not has_values(ds, "train_loss") and has_values(ds, "loss"):
        panels.insert(0, "loss")
    if not panels:
        raise ValueError("analysis Dataset has no values for 'train_loss', 'test_loss', 'train_acc', 'test_acc' "
                         "or the per-step 'loss'")
    return panels


def loss_accuracy(ds: xr.Dataset) -> Figure:
    """Loss and accuracy at every checkpoint, one panel per quantity recorded (the per-step batch loss
    when no training loss was evaluated at checkpoints), one line per optimiser."""
    ds = as_combined(ds)
    panels = loss_panels(ds)
    runs = run_infos(ds)
    accuracies = [ds[n].values.ravel() for n in ("train_acc", "test_acc") if has_values(ds, n)]
    scale = p.accuracy_scale(np.concatenate(accuracies)) if accuracies else 100.0
    ncols = min(2, len(panels))
    fig, axes = p.new_figure(ncols, -(-len(panels) // ncols), height=3.0)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax, name in zip(axes.ravel(), panels):
        is_acc = name.endswith("acc")
        if name == "loss":   # per step, thinned to ~1500 points per line
            xs = []
            for group in seed_groups(runs):
                xs += draw_group(ax, [(r, *step_series(ds, "loss", r.index)) for r in group], marker=None, lw=1)
            x = np.concatenate(xs) if xs else np.array([])
            ax.set_title("training loss (batch loss per step)")
        else:
            x = plot_checkpoints(ax, ds, name, runs, scale if is_acc else 1.0)
            ax.set_title(NAMES[name])
        p.set_step_axis(ax, x)
        mark_phases(ax, ds, runs)
        if is_acc:
            ax.set_ylabel("accuracy (%)")
            p.percent_axis(ax)
        else:
            ax.set_ylabel(p.scale_label("loss (mean per sample)", p.set_value_scale(ax, drawn_values(ax))))
        ax.grid(alpha=0.3)
    p.legend(fig)
    return fig


def loss_accuracy_caption(ds: xr.Dataset) -> str:
    """What the loss/accuracy figure shows and which of its quantities were not recorded."""
    ds = as_combined(ds)
    panels = loss_panels(ds)
    missing = [NAMES[name] for name, _, _ in LOSS_PANELS if name not in panels]
    text = ("Loss and accuracy at every checkpoint (full training and test sets), one line per optimiser in the same "
            "colour in every figure; with several seeds, their mean with a ± 1 sd band, the legend saying how many "
            "seeds stand behind each line. A training accuracy that keeps rising while the test accuracy stalls is "
            "overfitting. Dashed vertical lines mark optimiser switches of phased runs.")
    if "loss" in panels:
        text += (" No training loss was evaluated at checkpoints, so the first panel shows the loss of each step's "
                 "mini-batch before its update (noisier, and on a different batch every step).")
    if missing:
        text += f" Not recorded, so not drawn: {', '.join(missing)}."
    return text


def _change_names(ds: xr.Dataset) -> tuple[str, str, str | None, bool]:
    """(own, held-out, next or None, smoothed?) per-step variables the overfitting figure draws."""
    own = "own_change_smooth" if has_values(ds, "own_change_smooth") else "own_change"
    other = "other_change_smooth" if has_values(ds, "other_change_smooth") else "other_change"
    upcoming = "next_change_smooth" if has_values(ds, "next_change_smooth") else \
        "next_change" if has_values(ds, "next_change") else None
    return own, other, upcoming, own.endswith("smooth")


def batch_loss_change(ds: xr.Dataset) -> Figure:
    """Per-step relative loss change on the batch just trained on, the next training batch and a fixed
    held-out batch, one colour per optimiser (seeds aggregated); and their average over all steps.

    Long runs are drawn with at most ~1500 points per line (means over consecutive steps); the bar
    panel averages every step, per seed, then over seeds (± 1 sd error bars)."""
    ds = as_combined(ds)
    own, other, upcoming, smooth = _change_names(ds)
    require(ds, own, other)
    logs = has_values(ds, "own_log_change") and has_values(ds, "other_log_change")
    raw_own = "own_log_change" if logs else "own_change" if has_values(ds, "own_change") else own
    raw_other = "other_log_change" if logs else "other_change" if has_values(ds, "other_change") else other
    runs = run_infos(ds)
    groups = seed_groups(runs)
    fig, axes = p.new_figure(2, width=5.2)
    ax, bar_ax = axes[0]
    xs = []
    kinds = [(own, "-", 1.5, "own batch"), (other, ":", 2.0, "held-out batch")]
    if upcoming is not None:
        kinds.append((upcoming, "--", 1.0, "next batch"))
    for group in groups:
        for i, (name, ls, lw, _) in enumerate(kinds):
            series = [(r, *step_series(ds, name, r.index)) for r in group]
            # one legend entry per optimiser; the batch kinds (line styles) have their own key
            xs += draw_group(ax, series, ls=ls, lw=lw, marker=None, legend=i == 0)
    ax.axhline(0, color="0.5", lw=0.8)
    p.set_step_axis(ax, np.concatenate(xs) if xs else np.array([0.0]))
    mark_phases(ax, ds, runs)
    ax.set_ylabel(p.scale_label("loss change by the step (%)", p.set_value_scale(ax, drawn_values(ax))))
    ax.set_title("loss change per step" + (" (moving average)" if smooth else ""))
    ax.grid(alpha=0.3)
    pos = np.arange(len(groups))
    for k, (name, offset, alpha, hatch) in enumerate(((raw_own, -0.2, 1.0, None), (raw_other, 0.2, 0.45, "//"))):
        stats = [_over_seeds([step_mean(ds, name, r.index) for r in group]) for group in groups]
        bar_ax.bar(pos + offset, [m for m, _ in stats], 0.4, yerr=[0.0 if s is None else s for _, s in stats],
                   color=[g[0].color for g in groups], alpha=alpha, hatch=hatch, capsize=2, ecolor="0.25", error_kw={"lw": 0.8})
    bar_ax.axhline(0, color="0.5", lw=0.8)
    bar_ax.set_xticks(pos, [p.short(g[0].optimizer) for g in groups], rotation=30 if len(groups) > 4 else 0,
                      ha="right" if len(groups) > 4 else "center")
    bar_ax.set_ylabel("mean log-ratio per step (%)" if logs else "mean loss change per step (%)")
    bar_ax.set_title("average over all steps")
    bar_ax.grid(alpha=0.3, axis="y")
    key = [(ls, text) for _, ls, _, text in kinds]
    p.legend(fig, [ax], extra=p.style_key(*key) + p.bar_key(("own batch (bars)", None), ("held-out batch (bars)", "//")))
    return fig


def _over_seeds(values: list[float]) -> tuple[float, float | None]:
    """(mean, sample sd or None) over the finite ``values``."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return np.nan, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def batch_loss_change_caption(ds: xr.Dataset) -> str:
    ds = as_combined(ds)
    own, other, upcoming, smooth = _change_names(ds)
    batches = "solid: the mini-batch the update was computed from; dotted: a fixed held-out batch"
    if upcoming is not None:
        batches += "; dashed: the next training mini-batch"
    average = (" as a moving average over steps" if smooth else "")
    logs = has_values(ds, "own_log_change") and has_values(ds, "other_log_change")
    bars = ("the mean log-ratio 100·mean(log(L_after/L_before)) over all steps (the unbiased average of "
            "heavy-tailed per-step changes)" if logs else "the mean change over all steps")
    return (f"Left: relative change of the loss caused by each update, 100·(L_after − L_before)/L_before{average}, "
            f"one colour per optimiser ({batches}); with several seeds their mean with a ± 1 sd band. Right: {bars} "
            "per optimiser (solid bars: own batch, hatched: held-out batch), averaged over seeds with ± 1 sd error "
            "bars. An optimiser that fits every mini-batch without learning what carries over shows a large "
            "own-batch drop next to a near-zero change on other batches (transfer near 0). Dashed vertical lines "
            "mark optimiser switches of phased runs.")


def gn_residual(ds: xr.Dataset) -> Figure:
    """Relative residual ρ = ‖J δθ + α ε‖ / ‖α ε‖ of every Gauss–Newton step.

    Long runs are drawn with at most ~1500 points per line, each the worst (max) ρ of its steps.
    Several seeds of one optimiser: their mean per step with a band from the smallest to the largest ρ.
    The value axis is logarithmic when ρ spans a decade or more (symmetric-log when a ρ is exactly 0).
    """
    ds = as_combined(ds)
    require(ds, "gn_residual")
    fig, axes = p.new_figure(1, width=6.5)
    ax = axes[0, 0]
    xs = []
    for group in seed_groups(run_infos(ds)):   # first-order runs have no residual: no points, not drawn
        series = [(r, *step_series(ds, "gn_residual", r.index)) for r in group]
        xs += draw_group(ax, series, band="minmax", marker=None, lw=1, reduce=np.max)
    scale = p.set_value_scale(ax, drawn_values(ax), decades=1.0)   # ρ is read by its order of magnitude
    p.set_step_axis(ax, np.concatenate(xs))
    ax.set_ylabel(p.scale_label("relative residual ρ", scale))
    ax.set_title("does the linearised step hit its output target?")
    ax.grid(alpha=0.3)
    p.legend(fig)
    return fig


ROUND_OFF = {"float16": 1e-3, "bfloat16": 8e-3, "float32": 1.2e-7, "float64": 2.2e-16}


def gn_residual_caption(ds: xr.Dataset) -> str:
    """The residual figure's caption: what ρ is, the round-off level of the runs' dtype and the
    range of ρ drawn."""
    ds = as_combined(ds)
    rho = np.asarray(ds["gn_residual"].values, dtype=float) if "gn_residual" in ds else np.array([])
    rho = rho[np.isfinite(rho)]
    dtype = model_dtype(ds)
    text = ("Relative residual ρ = ‖J δθ + α ε‖ / ‖α ε‖ of every Gauss–Newton step: how far the linearised output "
            "change misses its output-space target ε. ")
    if dtype in ROUND_OFF:
        text += (f"The models are {dtype}, whose round-off is about {ROUND_OFF[dtype]:.0e} (machine epsilon); ρ within "
                 "a few tens of that means the step is exact to the arithmetic of the model's dtype. ")
    else:
        text += ("ρ near the round-off of the model's dtype (about 1e-7 in float32, 2e-16 in float64) means the "
                 "step is exact. ")
    if rho.size:
        text += f"Here ρ ranges from {rho.min():.1e} to {rho.max():.1e} (median {np.median(rho):.1e}). "
    return text + "First-order runs have no residual and are not drawn."
