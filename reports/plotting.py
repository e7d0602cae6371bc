"""Small drawing helpers shared by the figure functions (no pyplot: plain matplotlib Figures, Agg).

Using ``matplotlib.figure.Figure`` directly keeps no global figure registry, so building many
figures in one process leaks nothing and never needs a display.
"""

from __future__ import annotations

import io
import textwrap

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from dynamics.store.names import original

STEP_LABEL = "training step (updates)"


def new_figure(ncols: int, nrows: int = 1, *, width: float = 4.6, height: float = 3.4):
    """A constrained-layout Figure with an (nrows, ncols) array of axes."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def spans_decades(values, decades: float = 2.0) -> bool:
    """True when the nonzero finite magnitudes |values| span at least ``decades`` powers of ten."""
    v = np.abs(np.asarray(values, dtype=float))
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and np.log10(v.max() / v.min()) >= decades


def value_scale(values, decades: float = 2.0) -> tuple[str, dict]:
    """The scale of a value axis that drops no finite value (issue #21 item 6): (name, kwargs of
    ``Axes.set_yscale``).

    - "linear" unless the nonzero finite magnitudes span ``decades`` powers of ten;
    - "log" when they do and every finite value is > 0;
    - "symlog" when they do and a value is 0 or negative (a log axis would hide it: a float32
      cross-entropy of exactly 0, a residual of exactly 0, a loss change < 0), linear within
      ±``linthresh`` = the largest power of ten ≤ the smallest nonzero magnitude, so that magnitude is
      still on the logarithmic part.
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if not spans_decades(v, decades):
        return "linear", {}
    if (v > 0).all():
        return "log", {}
    smallest = float(np.abs(v[v != 0]).min())
    return "symlog", {"linthresh": 10.0 ** np.floor(np.log10(smallest)), "linscale": 0.5}


SCALE_NOTE = {"linear": "", "log": ", log scale", "symlog": ", symmetric log scale"}
LABEL_WIDTH = 34   # characters per line of an axis label; longer ones wrap (a rotated label taller than
                   # its axes would be cut at the figure's edge)


def set_value_scale(ax, values, axis: str = "y", decades: float = 2.0) -> str:
    """Apply :func:`value_scale` of ``values`` to ``ax``'s ``axis`` ("x" or "y"); returns the scale name.
    The one place every figure chooses a value axis's scale."""
    name, kwargs = value_scale(values, decades)
    (ax.set_yscale if axis == "y" else ax.set_xscale)(name, **kwargs)
    return name


def scale_label(label: str, scale: str) -> str:
    """An axis label with its scale named (", log scale" ...; nothing for linear), wrapped at
    :data:`LABEL_WIDTH` characters."""
    return textwrap.fill(label + SCALE_NOTE[scale], LABEL_WIDTH)


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


MAX_LEGEND = 24          # legend entries shown at most; the rest are summarised in one entry
LEGEND_ROW_INCHES = 0.24   # height of one legend row at fontsize "small", with spacing


def legend(fig: Figure, axes=None, *, extra: list | tuple = (), max_entries: int = MAX_LEGEND) -> None:
    """One legend for the whole figure, below its axes, never over data, whatever the number of runs.

    Entries are the distinct labels of ``axes`` (default: every axes of ``fig``) in drawing order,
    then ``extra`` (handle, label) pairs (e.g. line-style keys); labels starting with "_" are skipped.
    More than ``max_entries``: the first ``max_entries − 1`` and one entry "… and k more". The legend
    sits outside the axes ("outside lower center" of the constrained layout) in as many columns as the
    figure's width holds, and the figure grows by the legend's height so the axes keep their size.
    """
    entries: dict[str, object] = {}
    for ax in (fig.axes if axes is None else axes):
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels):
            entries.setdefault(label, handle)
    for handle, label in extra:
        entries.setdefault(label, handle)
    entries = {label: handle for label, handle in entries.items() if label and not label.startswith("_")}
    if not entries:
        return
    labels, handles = list(entries), list(entries.values())
    longest = max(len(label) for label in labels[:max_entries - 1])
    if len(labels) > max_entries:
        hidden = len(labels) - (max_entries - 1)
        labels, handles = labels[:max_entries - 1], handles[:max_entries - 1]
        labels.append(f"… and {hidden} more (see the tables)")
        handles.append(Line2D([], [], color="none"))
    width = fig.get_figwidth()
    column = 0.6 + 0.075 * longest                        # inches: handle + text at fontsize "small"
    ncols = max(1, min(len(labels), int(width // column)))
    rows = -(-len(labels) // ncols)
    fig.set_figheight(fig.get_figheight() + rows * LEGEND_ROW_INCHES + 0.15)
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize="small", frameon=False)


def bar_key(*pairs: tuple[str, str | None]) -> list[tuple[Patch, str]]:
    """Legend entries explaining bar fills in grey, e.g. ``bar_key(("own batch", None), ("held-out", "//"))``."""
    return [(Patch(facecolor="0.6", edgecolor="0.35", hatch=hatch, alpha=1.0 if hatch is None else 0.45), text)
            for text, hatch in pairs]


def style_key(*pairs: tuple[str, str]) -> list[tuple[Line2D, str]]:
    """Legend entries explaining line styles in grey, e.g. ``style_key(("-", "own batch"), (":", "held-out"))``."""
    return [(Line2D([], [], color="0.35", ls=ls, lw=1.5), text) for ls, text in pairs]


def note(ax, text: str) -> None:
    """Write ``text`` in the middle of an empty panel (e.g. a quantity that was not recorded)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def display_name(store_name: str) -> str:
    """Human name of a store layer/parameter key: ``blocks__0__F__linear__weight`` -> ``blocks.0.F.linear.weight``,
    ``d__enc-2f0`` -> ``d.enc/0`` (:func:`dynamics.store.names.original`)."""
    return original(str(store_name))


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
