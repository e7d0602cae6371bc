"""Small drawing helpers shared by the figure functions (no pyplot: plain matplotlib Figures, Agg).

Using ``matplotlib.figure.Figure`` directly keeps no global figure registry, so building many
figures in one process leaks nothing and never needs a display.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

STEP_LABEL = "training step (updates)"


def new_figure(ncols: int, nrows: int = 1, *, width: float = 4.6, height: float = 3.4):
    """A constrained-layout Figure with an (nrows, ncols) array of axes."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def spans_decades(values, decades: float = 2.0) -> bool:
    """True when the positive finite ``values`` span at least ``decades`` powers of ten."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and np.log10(v.max() / v.min()) >= decades


def set_step_axis(ax, steps) -> None:
    """Label the x axis in steps; symmetric-log (linear below 1, so step 0 shows) when steps span decades."""
    if spans_decades(steps):
        ax.set_xscale("symlog", linthresh=1.0, linscale=0.3)
        ax.set_xlabel(STEP_LABEL + ", log scale")
        ax.set_xlim(left=0)
    else:
        ax.set_xlabel(STEP_LABEL)


def mark_divergence(ax, ds, runs) -> None:
    """A dotted vertical line in the run's colour at each run's first non-finite input
    (:func:`reports.runs.divergence_step`), labelled "non-finite"; nothing for runs without one."""
    from reports.runs import divergence_step

    for r in runs:
        step = divergence_step(ds, r.index)
        if step is not None:
            ax.axvline(step, color=r.color, ls=":", lw=1.5)
            ax.annotate("non-finite", (step, 0.02), xycoords=("data", "axes fraction"), fontsize="x-small",
                        color=r.color, rotation=90, va="bottom", ha="right")


def set_log_y_if_wide(ax, values) -> None:
    """Log y axis when the positive values span two decades or more."""
    if spans_decades(values):
        ax.set_yscale("log")


def thin(x: np.ndarray, y: np.ndarray, max_points: int = 1500, reduce=np.mean) -> tuple[np.ndarray, np.ndarray]:
    """At most ~``max_points`` points of a per-step series for drawing: consecutive bins of
    k = ceil(n / max_points) points become (first x of the bin, ``reduce`` of its y), e.g. ``np.max``
    to keep the worst value of every bin. Series with n ≤ max_points are returned unchanged.
    """
    n = len(x)
    if n <= max_points:
        return x, y
    k = -(-n // max_points)
    starts = np.arange(0, n, k)
    return x[starts], np.array([reduce(y[s:s + k]) for s in starts])


def accuracy_scale(values) -> float:
    """Factor that turns accuracies into percent: 100 for fractions in [0, 1], 1 if already in percent."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return 1.0 if v.size and v.max() > 1.0 + 1e-9 else 100.0


def percent_axis(ax, axis: str = "y") -> None:
    """Format an axis holding percentages (values already multiplied by 100)."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(PercentFormatter(xmax=100, decimals=0))


LONG_LEGEND = 6


def legend(ax, **kwargs) -> None:
    """Legend without duplicate labels (several panels or seeds may repeat one); placed outside the
    axes, to their right, when it has more than :data:`LONG_LEGEND` entries so it hides no data."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if not unique:
        return
    if len(unique) > LONG_LEGEND:
        kwargs = {**kwargs, "loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0}
    ax.legend(unique.values(), unique.keys(), fontsize="small", frameon=False, **kwargs)


def note(ax, text: str) -> None:
    """Write ``text`` in the middle of an empty panel (e.g. a quantity that was not recorded)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def display_name(store_name: str) -> str:
    """Human name of a store layer/parameter name: ``blocks__0__F__linear__weight`` -> ``blocks.0.F.linear.weight``."""
    return str(store_name).replace("__", ".")


def short(text: str, width: int = 22) -> str:
    """User text as a plot label: cut to ``width`` characters with an ellipsis (long run names would
    squash the plot) and with ``$`` escaped, so matplotlib shows it as typed instead of parsing mathtext."""
    text = str(text)
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("$", r"\$")


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure rendered to PNG bytes with the Agg canvas."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
