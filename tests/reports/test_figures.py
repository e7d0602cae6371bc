"""Every figure: draws from the §6 Dataset, labels its axes, keeps one colour per optimiser,
uses a log step axis when steps span decades, and refuses clearly when its quantity is missing."""

import matplotlib.colors as mcolors
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from synthetic import make_analysis

from reports import figures
from reports.catalog import FIGURES
from reports.palette import optimizer_color
from reports.plotting import figure_png


@pytest.fixture(scope="module")
def drawn(analysis_ds):
    return {spec.name: spec.draw(analysis_ds) for spec in FIGURES}


def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


@pytest.mark.parametrize("name", [spec.name for spec in FIGURES])
def test_figure_has_labelled_axes_and_renders(drawn, name):
    fig = drawn[name]
    assert isinstance(fig, Figure)
    axes = _visible_axes(fig)
    assert axes
    for ax in axes:
        assert ax.get_xlabel() or ax.get_xticklabels(), name
        assert ax.get_ylabel() or name == "cka_between_optimizers", name
        assert ax.get_title() or ax.get_ylabel()
    png = figure_png(fig, dpi=40)
    assert png[:4] == b"\x89PNG"


def _legend_entries(fig):
    """(text, handle) of the figure's legends."""
    out = []
    for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        out += list(zip([t.get_text() for t in legend.get_texts()], legend.legend_handles))
    return out


def _handle_color(handle):
    color = handle.get_color() if hasattr(handle, "get_color") else handle.get_facecolor()
    return mcolors.to_hex(color if isinstance(color, str) or np.ndim(color) == 1 else color[0]).upper()


@pytest.mark.parametrize("name", ["loss_accuracy", "ntk_dynamics", "cka_to_init", "effective_rank",
                                  "probe_accuracy", "gn_residual", "weight_change", "batch_loss_change"])
def test_lines_use_the_optimizer_colour(drawn, name, analysis_ds):
    """Every optimiser's legend entry and every line drawn in its name carry its palette colour."""
    seen = {}
    for text, handle in _legend_entries(drawn[name]):
        label = text.split(" (")[0]
        if label in ("gn", "sgd", "adam"):
            seen.setdefault(label, set()).add(_handle_color(handle))
    expected = {"gn", "sgd", "adam"} if name != "gn_residual" else {"gn"}
    assert set(seen) == expected
    for label, colors in seen.items():
        assert colors == {optimizer_color(label).upper()}
    palette = {optimizer_color(o).upper() for o in ("gn", "sgd", "adam")}
    for ax in _visible_axes(drawn[name]):
        for line in ax.get_lines():
            if line.get_linestyle() in ("None", "") and line.get_marker() in ("_", "|"):
                continue   # error-bar caps: drawn in their marker colour
            color = mcolors.to_hex(line.get_color()).upper()
            assert color in palette or color in ("#808080", "#595959", "#404040"), (name, color)  # greys: zero, error bars


def test_legends_name_the_runs(drawn):
    for name in ("loss_accuracy", "ntk_dynamics", "gn_residual", "weight_change"):
        texts = {t for t, _ in _legend_entries(drawn[name])}
        assert "gn" in texts, (name, texts)


def test_step_axis_is_log_when_steps_span_decades(drawn):
    ax = drawn["ntk_dynamics"].axes[0]
    assert ax.get_xscale() == "symlog" and "log scale" in ax.get_xlabel()
    short = make_analysis(n_steps=40)
    short = short.assign_coords(checkpoint_step=("checkpoint", np.linspace(30, 39, short.sizes["checkpoint"])))
    ax = figures.ntk_dynamics(short).axes[0]
    assert ax.get_xscale() == "linear" and ax.get_xlabel() == "training step (updates)"


def test_accuracy_axes_are_in_percent(drawn, analysis_ds):
    ax = drawn["loss_accuracy"].axes[3]  # test accuracy
    y = np.concatenate([line.get_ydata() for line in ax.get_lines()])
    expected = 100 * analysis_ds["test_acc"].values
    np.testing.assert_allclose(np.sort(y), np.sort(expected[np.isfinite(expected)].ravel()), rtol=0, atol=1e-12)
    assert ax.get_ylabel() == "accuracy (%)"


def test_plotted_values_are_the_dataset_values(drawn, analysis_ds):
    ax = drawn["cka_to_init"].axes[2]  # third layer
    gn = [line for line in ax.get_lines() if line.get_label() == "gn"][0]
    np.testing.assert_array_equal(gn.get_xdata(), analysis_ds["checkpoint_step"].values)
    np.testing.assert_array_equal(gn.get_ydata(), analysis_ds["cka_init"].sel(run="gn").isel(layer=2).values)
    heat = drawn["cka_between_optimizers"].axes[1].get_images()[0].get_array()
    np.testing.assert_array_equal(heat, analysis_ds["cka_between"].isel(checkpoint=-1, layer=1).values)


def test_gn_residual_leaves_out_first_order_runs_and_needs_a_gn_run(analysis_ds):
    labels = [line.get_label() for line in figures.gn_residual(analysis_ds).axes[0].get_lines()]
    assert labels == ["gn"]
    first_order = analysis_ds.sel(run=["sgd", "adam"], run_=["sgd", "adam"])
    with pytest.raises(ValueError, match="gn_residual"):
        figures.gn_residual(first_order)


def test_missing_variables_raise_naming_them(analysis_ds):
    no_ntk = analysis_ds.drop_vars(["ntk_alignment_init", "ntk_velocity"])
    with pytest.raises(ValueError, match="ntk_alignment_init"):
        figures.ntk_dynamics(no_ntk)
    only_rep = analysis_ds.drop_vars("ntk_effective_rank")
    assert len(_visible_axes(figures.effective_rank(only_rep))) == 1
    with pytest.raises(ValueError, match="ntk_effective_rank"):
        figures.effective_rank(only_rep.drop_vars("rep_effective_rank"))
    with pytest.raises(ValueError, match="at least two runs"):
        figures.cka_between_optimizers(analysis_ds.isel(run=[0], run_=[0]))
    with pytest.raises(TypeError, match="xarray.Dataset"):
        figures.loss_accuracy(analysis_ds["test_acc"])


def test_single_run_dataset_without_run_dim(analysis_ds):
    one = analysis_ds.isel(run=0, drop=True).drop_vars("cka_between")
    one.attrs = {"optimizer": "gn", "seed": 3}
    fig = figures.loss_accuracy(one)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["gn"]


def test_seeds_are_drawn_as_mean_and_sd_band(analysis_seeds):
    ax = figures.ntk_dynamics(analysis_seeds).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"gn (mean ± sd, 2 seeds)", "adam (mean ± sd, 2 seeds)"}
    for optimizer, label in (("gn", "gn (mean ± sd, 2 seeds)"), ("adam", "adam (mean ± sd, 2 seeds)")):
        runs = [i for i, o in enumerate(analysis_seeds["optimizer"].values) if o == optimizer]
        values = analysis_seeds["ntk_alignment_init"].isel(run=runs).values  # (2 seeds, checkpoints)
        keep = np.isfinite(values).all(axis=0)
        mean = values[:, keep].mean(axis=0)
        sd = np.sqrt(((values[:, keep] - mean) ** 2).sum(axis=0) / (len(runs) - 1))
        np.testing.assert_allclose(lines[label].get_ydata(), mean, rtol=1e-12)
        color = mcolors.to_rgb(lines[label].get_color())
        band = [c for c in ax.collections if np.allclose(c.get_facecolor()[0][:3], color)]
        assert band, "no sd band drawn"
        vertices = band[0].get_paths()[0].vertices[:, 1]
        np.testing.assert_allclose([vertices.min(), vertices.max()], [(mean - sd).min(), (mean + sd).max()], rtol=1e-12)


def test_single_seed_runs_keep_their_labels(analysis_ds):
    labels = [line.get_label() for line in figures.ntk_dynamics(analysis_ds).axes[0].get_lines()]
    assert labels == ["gn", "sgd", "adam"]


def test_long_legends_are_bounded_and_below_the_axes():
    """However many entries, one figure legend below the axes, at most MAX_LEGEND entries."""
    from reports.plotting import MAX_LEGEND, legend, new_figure

    for n in (3, 7, 60):
        fig, axes = new_figure(1)
        for i in range(n):
            axes[0, 0].plot([0, 1], [i, i], label=f"run {i}")
        legend(fig)
        (box,) = fig.legends
        texts = [t.get_text() for t in box.get_texts()]
        assert len(texts) == min(n, MAX_LEGEND)
        if n > MAX_LEGEND:
            assert texts[-1] == f"… and {n - MAX_LEGEND + 1} more (see the tables)"
        FigureCanvasAgg(fig).draw()
        assert box.get_window_extent().y1 <= axes[0, 0].get_window_extent().y0
        assert fig.get_figheight() < 3.4 + 7 * 0.24 + 0.2   # at most 7 rows of entries


def test_weight_change_is_norm_weighted_with_weights_and_biases_apart(analysis_seeds):
    ds = analysis_seeds
    fig = figures.weight_change(ds)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    params = list(ds["param"].values)
    bias = np.array([p.endswith("bias") for p in params])
    for optimizer in ("gn", "adam"):
        runs = [i for i, o in enumerate(ds["optimizer"].values) if o == optimizer]
        for kind, mask in (("weights", ~bias), ("biases", bias)):
            per_seed = []
            for i in runs:  # brute force: the group's tensors as one vector, ‖Δ‖ / ‖θ0‖
                delta = ds["weight_delta_norm"].isel(run=i).values[:, mask]
                init = ds["weight_init_norm"].isel(run=i).values[mask]
                per_seed.append(100 * np.sqrt((delta ** 2).sum(axis=1)) / np.sqrt((init ** 2).sum()))
            want = np.mean(per_seed, axis=0)
            got = lines[f"{'_' if kind == 'biases' else ''}{optimizer} (mean ± sd, 2 seeds)"]
            np.testing.assert_allclose(got.get_ydata(), want, rtol=1e-12)
    # a plain mean over tensors would be dominated by the biases; the weighted one is not
    weights_line = lines["gn (mean ± sd, 2 seeds)"].get_ydata()
    plain = 100 * ds["weight_rel_change"].isel(run=0).values.mean(axis=1)
    assert not np.allclose(weights_line, plain)


def test_ragged_runs_drop_padding(analysis_ds):
    ragged = analysis_ds.copy(deep=True)
    ragged["test_acc"].loc[{"run": "sgd", "checkpoint": [10, 11]}] = np.nan
    ragged["own_change_smooth"].loc[{"run": "sgd"}] = np.where(np.arange(ragged.sizes["step"]) > 100, np.nan,
                                                                ragged["own_change_smooth"].sel(run="sgd"))
    fig = figures.loss_accuracy(ragged)
    sgd = [line for line in fig.axes[3].get_lines() if line.get_label() == "sgd"][0]
    assert len(sgd.get_xdata()) == ragged.sizes["checkpoint"] - 2 and np.isfinite(sgd.get_ydata()).all()
    own = [line for line in figures.batch_loss_change(ragged).axes[0].get_lines()
           if line.get_label() == "sgd"][0]
    assert own.get_xdata().max() == 100


def test_thin_bins_long_series_against_a_loop():
    from reports.plotting import thin

    rng = np.random.default_rng(0)
    for n, cap in [(10, 20), (1000, 100), (1001, 100), (12345, 1500)]:
        x, y = np.arange(n) * 2.0, rng.standard_normal(n)
        tx, ty = thin(x, y, cap, reduce=np.max)
        if n <= cap:
            assert tx is x and ty is y
            continue
        k = -(-n // cap)
        expected = [max(y[i:i + k]) for i in range(0, n, k)]
        assert len(tx) <= cap and np.array_equal(tx, x[::k]) and np.array_equal(ty, expected)


def test_long_runs_are_thinned_but_keep_the_worst_residual():
    ds = make_analysis(optimizers=("gn",), n_steps=6000)
    ds["gn_residual"][0, 4321] = 1e-3  # one bad step
    (line,) = figures.gn_residual(ds).axes[0].get_lines()
    assert len(line.get_xdata()) <= 1500 and line.get_ydata().max() == 1e-3


def test_bar_panel_shows_mean_raw_changes(drawn, analysis_ds):
    bars = drawn["batch_loss_change"].axes[1].patches
    heights = [b.get_height() for b in bars]
    own = [analysis_ds["own_change"].sel(run=r).mean().item() for r in ("gn", "sgd", "adam")]
    other = [analysis_ds["other_change"].sel(run=r).mean().item() for r in ("gn", "sgd", "adam")]
    np.testing.assert_allclose(heights, own + other, rtol=1e-12)
