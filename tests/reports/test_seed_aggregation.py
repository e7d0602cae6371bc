"""Seeds of unequal length (issue #21 item 5): every step is drawn, with the number of seeds behind it
and a band where at least two seeds have a value; checked against aggregates computed by hand, one
step at a time, from the Dataset's values."""

import math

import matplotlib.colors as mcolors
import numpy as np
import pytest
from synthetic import make_analysis

from reports.figures import gn_residual, ntk_dynamics
from reports.figures.seeds import aggregate, aligned, count_phrase


def by_hand(series):
    """{x: (mean, sample sd or None, min, max, count)} over the seeds having x, with loops."""
    out = {}
    for x in sorted({float(v) for xs, _ in series for v in xs}):
        values = [float(y[list(xs).index(x)]) for xs, y in series if x in list(xs)]
        n = len(values)
        mean = sum(values) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
        out[x] = (mean, sd, min(values), max(values), n)
    return out


@pytest.mark.parametrize("lengths", [(50, 50, 10), (10, 50, 30), (7,), (3, 3)])
def test_aggregate_over_unequal_seeds_matches_a_loop(lengths):
    rng = np.random.default_rng(len(lengths))
    series = [(np.arange(1, n + 1, dtype=float), rng.standard_normal(n)) for n in lengths]
    agg = aggregate(series)
    expected = by_hand(series)
    assert list(agg.x) == list(expected)                 # every step, up to the longest seed
    for i, x in enumerate(agg.x):
        mean, sd, low, high, n = expected[x]
        assert agg.count[i] == n
        assert agg.mean[i] == pytest.approx(mean, rel=1e-12, abs=1e-15)
        if sd is None:
            assert np.isnan(agg.sd[i]) and np.isnan(agg.low[i]) and np.isnan(agg.high[i])
        else:
            assert agg.sd[i] == pytest.approx(sd, rel=1e-12)
            assert (agg.low[i], agg.high[i]) == (low, high)


def test_count_phrase_names_where_seeds_end():
    series = [(np.arange(1, 51.0), np.zeros(50)), (np.arange(1, 51.0), np.zeros(50)), (np.arange(1, 11.0), np.zeros(10))]
    assert count_phrase(aggregate(series)) == "3 seeds to step 10, then 2"
    three = series[:2] + [(np.arange(1, 31.0), np.zeros(30)), (np.arange(1, 11.0), np.zeros(10))]
    assert count_phrase(aggregate(three)) == "4 seeds to step 10, 3 to step 30, then 2"
    assert count_phrase(aggregate(series[:2])) == "2 seeds"


def test_different_schedules_are_not_averaged_point_by_point():
    a = (np.array([0.0, 1, 3, 10]), np.ones(4))
    b = (np.array([0.0, 2, 5, 10]), np.ones(4))
    assert not aligned([a, b]) and aggregate([a, b]) is None
    short = (np.array([0.0, 1, 3]), np.ones(3))          # same schedule, ended early: aligned
    assert aligned([a, short])


def _truncate(ds, run, last_step):
    """NaN every per-step and checkpoint value of ``run`` after ``last_step`` (a seed that stopped)."""
    out = ds.copy(deep=True)
    this_run = out["run"] == run
    for name, var in ds.data_vars.items():
        if "run" in var.dims and var.dtype.kind == "f":
            if "step" in var.dims:
                out[name] = var.where(~(this_run & (out["step"] > last_step)))
            elif "checkpoint" in var.dims:
                out[name] = var.where(~(this_run & (out["checkpoint_step"] > last_step)))
    return out


def test_figures_draw_every_step_of_the_longest_seed_with_the_count():
    """The issue's example: seeds that ran to steps 50, 50 and 10 are drawn to step 50, not 10."""
    ds = make_analysis(optimizers=("gn", "adam"), seeds=(0, 1, 2), n_steps=51)
    ds = _truncate(_truncate(ds, "gn-seed2", 10), "adam-seed2", 10)
    gn_runs, adam_runs = ["gn-seed0", "gn-seed1", "gn-seed2"], ["adam-seed0", "adam-seed1", "adam-seed2"]

    (line,) = gn_residual(ds).axes[0].get_lines()
    assert line.get_label() == "gn (mean, band min–max, 3 seeds to step 10, then 2)"
    assert line.get_xdata().max() == 50
    rho = ds["gn_residual"].sel(run=gn_runs).values
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(line.get_ydata(), np.nanmean(rho, axis=0), rtol=1e-12)

    ax = ntk_dynamics(ds).axes[0]
    (adam,) = [l for l in ax.get_lines() if l.get_label().startswith("adam")]
    assert adam.get_label() == "adam (mean ± sd, 3 seeds to step 10, then 2)"
    assert adam.get_xdata().max() == ds["checkpoint_step"].values.max() == 50
    values = ds["ntk_alignment_init"].sel(run=adam_runs).values
    np.testing.assert_allclose(adam.get_ydata(), np.nanmean(values, axis=0), rtol=1e-12)
    color = mcolors.to_rgb(adam.get_color())
    (band,) = [c for c in ax.collections if np.allclose(c.get_facecolor()[0][:3], color)]
    top = band.get_paths()[0].vertices[:, 1].max()
    two_or_more = np.isfinite(values).sum(axis=0) >= 2
    sd = np.nanstd(values[:, two_or_more], axis=0, ddof=1)
    assert top == pytest.approx((np.nanmean(values[:, two_or_more], axis=0) + sd).max(), rel=1e-12)
