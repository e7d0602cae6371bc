"""Every figure of the report at 1, 3, 9 and 30 runs, measured as drawn (Agg renderer extents), not
only rendered: no axes collapsed, every legend inside the figure and off every axes' data area, no
label cut at the figure's edge, and constrained layout applied (its "axes sizes collapsed" warning
is an error here). The 30-run cases are synthetic: 3 optimisers × 10 seeds, and 10 optimisers × 3
seeds (a comparison of several experiments gives each its own optimisers)."""

import warnings

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from synthetic import make_analysis

from reports.catalog import FIGURES

MIN_AXES_PIXELS = 60      # at dpi 100: about 0.6 inch; a squashed strip is a few pixels
DPI = 100
CASES = {
    "1 run": (("gn",), (0,)),
    "3 runs": (("gn", "sgd", "adam"), (0,)),
    "9 runs": (("gn", "sgd", "adam"), (0, 1, 2)),
    "30 runs, 10 seeds": (("gn", "sgd", "adam"), tuple(range(10))),
    "30 runs, 10 optimisers": (("gn", "sgd", "adam", "kgn", "adamw", "rmsprop", "adagrad", "lion", "shampoo",
                                "a-much-longer-optimiser-name"), (0, 1, 2)),
}


def _overlap(a, b, tolerance: float = 0.5) -> bool:
    return a.x0 < b.x1 - tolerance and b.x0 < a.x1 - tolerance and a.y0 < b.y1 - tolerance and b.y0 < a.y1 - tolerance


def _inside(inner, outer, tolerance: float = 1.0) -> bool:
    return (inner.x0 >= outer.x0 - tolerance and inner.y0 >= outer.y0 - tolerance
            and inner.x1 <= outer.x1 + tolerance and inner.y1 <= outer.y1 + tolerance)


def measure(fig) -> list[str]:
    """Layout faults of a drawn figure, as text (empty when it is fine)."""
    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(DPI)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="constrained_layout not applied")
        canvas.draw()
    renderer = canvas.get_renderer()
    page = fig.bbox
    faults = []
    axes = [ax for ax in fig.axes if ax.get_visible()]
    data_axes = [ax for ax in axes if ax.get_label() != "<colorbar>"]
    for ax in data_axes:
        box = ax.get_window_extent(renderer)
        if box.width < MIN_AXES_PIXELS or box.height < MIN_AXES_PIXELS:
            faults.append(f"axes {ax.get_title()!r} collapsed to {box.width:.0f}×{box.height:.0f} px")
    for ax in axes:
        tight = ax.get_tightbbox(renderer)
        if tight is not None and not _inside(tight, page):
            faults.append(f"axes {ax.get_title()!r} with its labels {tight} is cut at the figure's edge {page}")
    legends = list(fig.legends) + [ax.get_legend() for ax in axes if ax.get_legend() is not None]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        if not _inside(box, page):
            faults.append(f"legend {box} outside the figure {page}")
        for ax in data_axes:
            if legend.axes is not ax and _overlap(box, ax.get_window_extent(renderer)):
                faults.append(f"legend over the data area of {ax.get_title()!r}")
    for text in fig.texts + ([fig._suptitle] if fig._suptitle is not None else []):
        if text.get_text() and not _inside(text.get_window_extent(renderer), page):
            faults.append(f"figure text {text.get_text()!r} cut")
    return faults


@pytest.mark.parametrize("case", list(CASES))
def test_every_figure_keeps_its_layout(case):
    optimizers, seeds = CASES[case]
    ds = make_analysis(optimizers=optimizers, seeds=seeds, n_steps=120)
    n_runs = len(optimizers) * len(seeds)
    faults = {}
    for spec in FIGURES:
        if spec.name == "cka_between_optimizers" and n_runs < 2:
            continue
        fig = spec.draw(ds)
        found = measure(fig)
        if found:
            faults[spec.name] = found
        legend_entries = sum(len(legend.get_texts()) for legend in fig.legends)
        assert legend_entries <= 24, (spec.name, legend_entries)
    assert not faults, faults


def test_the_issue_case_nine_runs_figure_2_has_three_legend_entries_for_lines():
    """Issue #25: with 9 runs figure 2 had a 27-entry legend clipped mid-list; now one entry per
    optimiser (the batch kinds and bars are keys in grey)."""
    from reports.figures import batch_loss_change

    fig = batch_loss_change(make_analysis(seeds=(0, 1, 2), n_steps=120))
    texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    per_optimizer = [t for t in texts if t.split(" ")[0] in ("gn", "sgd", "adam")]
    assert per_optimizer == [f"{o} (mean ± sd, 3 seeds)" for o in ("gn", "sgd", "adam")]
    assert {"own batch", "held-out batch"} <= set(texts)
    assert not measure(fig)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    ds = make_analysis(seeds=(0, 1, 2), n_steps=120)
    runs = [i for i, o in enumerate(ds["optimizer"].values) if o == "sgd"]
    mean = np.mean([ds["own_change_smooth"].isel(run=i).values for i in runs], axis=0)
    np.testing.assert_allclose(lines["sgd (mean ± sd, 3 seeds)"].get_ydata(), mean, rtol=1e-12)
