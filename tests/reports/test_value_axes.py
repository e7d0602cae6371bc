"""No figure drops a finite value (issue #21 item 6): the value-axis scale is chosen in one place
(reports.plotting.value_scale) and a zero or negative value makes it symmetric-log or linear, never
log. Checked on hand-made arrays and on drawn figures: every finite value lies inside the drawn
y limits and can be shown on the axis's scale."""

import json

import numpy as np
import pytest
from matplotlib.figure import Figure
from synthetic import make_analysis

from reports.figures import gn_residual, loss_accuracy, ntk_dynamics
from reports.plotting import set_value_scale, value_scale


@pytest.mark.parametrize("values, expected", [
    ([0.5, 1.0, 2.0], ("linear", {})),                      # within two decades
    ([1e-3, 0.1, 2.0], ("log", {})),                        # positive, three decades
    ([0.0, 1e-3, 2.0], ("symlog", {"linthresh": 1e-3, "linscale": 0.5})),   # the float32 CE of exactly 0
    ([-5.0, -0.02, 0.3], ("symlog", {"linthresh": 0.01, "linscale": 0.5})),
    ([0.0, 0.0, 1.0], ("linear", {})),                      # one nonzero magnitude: nothing to span
    ([np.nan, np.inf, 1e-9, 1e-2], ("log", {})),            # non-finite values are not data
    ([3e-8, 7e-8, 0.0], ("linear", {})),
])
def test_value_scale_by_hand(values, expected):
    name, kwargs = value_scale(values)
    assert name == expected[0]
    assert kwargs.keys() == expected[1].keys()
    for key, value in expected[1].items():
        assert kwargs[key] == pytest.approx(value, rel=1e-12)


def shown(ax, values) -> bool:
    """Every finite value lies within the y limits and maps to a finite display coordinate."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    low, high = sorted(ax.get_ylim())
    inside = (values >= low - 1e-12 * abs(low)) & (values <= high + 1e-12 * abs(high))
    display = ax.transData.transform(np.column_stack([np.ones_like(values), values]))[:, 1]
    return bool(inside.all() and np.isfinite(display).all())


def test_a_random_grid_of_arrays_keeps_every_value():
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(2, 40))
        values = 10.0 ** rng.uniform(-12, 3, n) * rng.choice([-1.0, 1.0, 1.0], n)
        values[rng.random(n) < 0.2] = 0.0
        ax = Figure().subplots()
        ax.plot(np.arange(n), values)
        set_value_scale(ax, values)
        ax.relim()
        ax.autoscale_view()
        assert shown(ax, values), values


def test_a_training_loss_of_exactly_zero_is_drawn():
    """Float32 cross-entropy is exactly 0 past a logit margin of ~17: a log axis would hide it."""
    ds = make_analysis(optimizers=("gn", "adam"), n_steps=200)
    ds["train_loss"].loc[{"run": "gn"}] = np.r_[np.geomspace(2.3, 1e-3, 8), 0.0, 0.0, 0.0, 0.0]
    ax = loss_accuracy(ds).axes[0]
    assert ax.get_yscale() == "symlog" and "symmetric log" in ax.get_ylabel().replace("\n", " ")
    (gn,) = [line for line in ax.get_lines() if line.get_label() == "gn"]
    assert (gn.get_ydata() == 0).sum() == 4
    assert shown(ax, ds["train_loss"].values)


def test_a_residual_of_exactly_zero_and_a_velocity_of_zero_are_drawn():
    ds = make_analysis(optimizers=("gn",), n_steps=200)
    ds["gn_residual"][0] = np.geomspace(1e-14, 1e-10, 200)
    ds["gn_residual"][0, 50] = 0.0
    ax = gn_residual(ds).axes[0]
    assert ax.get_yscale() == "symlog"
    assert shown(ax, ds["gn_residual"].values)
    ds["ntk_velocity"][0, 5] = 0.0
    velocity = ntk_dynamics(ds).axes[1]
    assert velocity.get_yscale() in ("symlog", "linear") and shown(velocity, ds["ntk_velocity"].values)


def test_positive_values_over_decades_stay_on_a_log_axis():
    ds = make_analysis(optimizers=("gn",), n_steps=200)
    ds["gn_residual"][0] = np.geomspace(1e-14, 1e-10, 200)
    ax = gn_residual(ds).axes[0]
    assert ax.get_yscale() == "log" and "log scale" in ax.get_ylabel()
    assert shown(ax, ds["gn_residual"].values)


def test_loss_only_runs_draw_the_per_step_loss_and_say_what_is_missing():
    """A user who logged only ``loss`` per step and ``test_acc`` at checkpoints gets a loss curve and
    a test-accuracy panel; the caption names what was not recorded."""
    from reports.catalog import FIGURES

    ds = make_analysis(optimizers=("adam",), n_steps=300).drop_vars(["train_loss", "test_loss", "train_acc"])
    fig = loss_accuracy(ds)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["training loss (batch loss per step)", "test accuracy"]
    (line,) = visible[0].get_lines()
    np.testing.assert_array_equal(line.get_ydata(), ds["loss"].isel(run=0).values)
    caption = next(s for s in FIGURES if s.name == "loss_accuracy").caption(ds)
    assert "Not recorded, so not drawn: training loss, test loss, training accuracy." in caption
    assert "loss of each step's mini-batch" in caption
    with pytest.raises(ValueError, match="train_loss"):
        loss_accuracy(ds.drop_vars(["loss", "test_acc"]))


def test_captions_follow_the_data():
    """Figure 8's round-off level comes from the runs' dtype; Figure 9 does not describe bias lines
    that are not drawn (zero-initialised biases have no relative change)."""
    from reports.catalog import FIGURES

    captions = {spec.name: spec for spec in FIGURES}
    ds = make_analysis(optimizers=("gn", "adam"), n_steps=120)
    ds.attrs["configs"] = json.dumps({"gn": {"model": {"dtype": "float32"}}, "adam": {"model": {"dtype": "float32"}}})
    ds["gn_residual"].loc[{"run": "gn"}] = np.linspace(6e-8, 8e-8, ds.sizes["step"])
    text = captions["gn_residual"].caption(ds)
    assert "float32" in text and "1e-07" in text and "1e-12" not in text
    assert "from 6.0e-08 to 8.0e-08" in text
    ds64 = ds.copy()
    ds64.attrs["configs"] = json.dumps({"gn": {"model": {"dtype": "float64"}}})
    assert "2e-16" in captions["gn_residual"].caption(ds64)

    weights = captions["weight_change"]
    assert "not drawn" not in weights.caption(ds) and "all biases (dashed)" in weights.caption(ds)
    bias = np.array([name.endswith("bias") for name in ds["param"].values])
    zero = ds.copy(deep=True)
    zero["weight_init_norm"][:, bias] = 0.0
    text = weights.caption(zero)
    assert "The biases start at zero" in text and "all biases (dashed)" not in text
    ax = weights.draw(zero).axes[0]
    assert all(line.get_linestyle() == "-" for line in ax.get_lines())   # no dashed bias line
