"""Per-minibatch change, transfer ratio and moving averages against explicit loops."""

import numpy as np
import pytest
import torch

from analysis.overfitting import default_window, moving_average, relative_change_percent, transfer_ratio


def loop_moving_average(values, window):
    out = []
    for i in range(len(values)):
        chunk = [v for v in values[max(0, i - window + 1): i + 1] if np.isfinite(v)]
        out.append(sum(chunk) / len(chunk) if chunk else np.nan)
    return np.array(out)


@pytest.mark.parametrize("n,window", [(1, 1), (10, 3), (57, 5), (200, 50), (8, 20)])
def test_moving_average_matches_loop_with_nans(n, window):
    rng = np.random.default_rng(n)
    values = rng.normal(size=n)
    values[rng.random(n) < 0.2] = np.nan
    np.testing.assert_allclose(moving_average(values, window), loop_moving_average(values, window),
                               rtol=1e-12, atol=1e-12, equal_nan=True)


def test_default_window():
    assert default_window(10) == 1 and default_window(1000) == 20
    values = np.arange(1000.0)
    np.testing.assert_allclose(moving_average(values), loop_moving_average(values, 20), rtol=1e-12)


def test_relative_change_and_transfer():
    before = np.array([2.0, 1.0, 0.0, 4.0, np.nan])
    after = np.array([1.0, 1.5, 1.0, 4.0, 1.0])
    change = relative_change_percent(before, after)
    np.testing.assert_allclose(change, [-50.0, 50.0, np.nan, 0.0, np.nan], equal_nan=True)
    other = np.array([-5.0, 10.0, 1.0, 3.0, 1.0])
    ratio = transfer_ratio(change, other)
    np.testing.assert_allclose(ratio, [0.1, 0.2, np.nan, np.nan, np.nan], equal_nan=True)  # own 0 → NaN, not inf
    assert np.isnan(transfer_ratio([1e-12], [1.0])[0])
    assert transfer_ratio(torch.tensor([2.0]), torch.tensor([1.0]), atol=0.0)[0] == 0.5


def test_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        relative_change_percent([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="window"):
        moving_average([1.0, 2.0], 0)
    with pytest.raises(ValueError, match="1-D"):
        moving_average(np.ones((2, 2)), 1)
    # non-finite inputs give NaN where they occur (a diverged loss), never an exception
    assert np.isnan(transfer_ratio([np.inf], [1.0])[0])
    np.testing.assert_array_equal(relative_change_percent([1.0, np.inf, 2.0], [2.0, 1.0, -np.inf]),
                                  [100.0, np.nan, np.nan])
    with pytest.raises(ValueError, match="atol"):
        transfer_ratio([1.0], [1.0], atol=-1)
    with pytest.raises(TypeError, match="values"):
        moving_average(["a", "b"], 1)


def test_log_mean_is_unbiased_on_a_heavy_tailed_chain():
    """A batch whose loss is back where it started after every pair of steps: +900 %, then −90 %.

    The true change per step is 0; the arithmetic mean says +405 %, the median the midpoint of the two."""
    from analysis.overfitting import change_summary

    losses = np.array([1.0, 10.0] * 50 + [1.0])
    summary = change_summary(losses[:-1], losses[1:])
    assert summary["log_mean"] == pytest.approx(0.0, abs=1e-12)
    assert summary["mean"] == pytest.approx((900.0 - 90.0) / 2, rel=1e-12)
    assert summary["median"] == pytest.approx((900.0 - 90.0) / 2, rel=1e-12)
    assert summary["n"] == 100 and summary["log_sum"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_mean_telescopes_to_the_real_change(seed):
    """Student-t (3 dof) log factors: the mean log-ratio is 100·log(L_T/L_0)/T, computed from the ends."""
    from analysis.overfitting import change_summary

    rng = np.random.default_rng(seed)
    factors = np.exp(0.05 * rng.standard_t(3, size=400) - 0.001)
    losses = 2.0 * np.cumprod(np.concatenate([[1.0], factors]))
    summary = change_summary(losses[:-1], losses[1:])
    truth = 100 * np.log(losses[-1] / losses[0]) / 400
    assert summary["log_mean"] == pytest.approx(truth, rel=1e-9)
    loop_mean = sum(100 * (b - a) / a for a, b in zip(losses[:-1], losses[1:])) / 400
    assert summary["mean"] == pytest.approx(loop_mean, rel=1e-9)
    assert summary["mean"] > summary["log_mean"]  # Jensen: the arithmetic mean is biased upwards


def test_log_change_and_transfer_by_hand():
    from analysis.overfitting import log_change_percent, log_transfer

    before = np.array([2.0, 1.0, 0.0, 4.0, np.nan, 3.0])
    after = np.array([1.0, np.e, 1.0, 4.0, 1.0, -1.0])
    np.testing.assert_allclose(log_change_percent(before, after),
                               [100 * np.log(0.5), 100.0, np.nan, 0.0, np.nan, np.nan], equal_nan=True)
    own = np.array([-10.0, -20.0, np.nan, -30.0])
    other = np.array([-1.0, 1.0, 5.0, -6.0])
    assert log_transfer(own, other) == pytest.approx((-1 + 1 - 6) / (-10 - 20 - 30))  # NaN step left out
    assert np.isnan(log_transfer([0.0, 0.0], [1.0, 2.0]))
    assert np.isnan(log_transfer([np.nan], [1.0]))
    with pytest.raises(ValueError, match="same length"):
        log_transfer([1.0], [1.0, 2.0])
