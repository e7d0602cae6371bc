import math

import numpy as np
import pytest

from dynamics.schedules import Schedule, as_schedule, at, every, log_spaced, log_spaced_steps, never


@pytest.mark.parametrize("n,start", [(1, 0), (3, 0), (7, 2), (10, 15)])
def test_every_matches_brute_force(n, start):
    sched = every(n, start=start)
    expected = {s for s in range(start, 200, n)}
    assert {s for s in range(200) if sched(s)} == expected


@pytest.mark.parametrize("n_total,n_points", [(1, 1), (2, 2), (5, 5), (10, 9), (10, 30), (100, 10), (1000, 20),
                                              (10_000, 50), (37, 4)])
def test_log_spaced_properties(n_total, n_points):
    steps = log_spaced_steps(n_total, n_points)
    assert steps == sorted(set(steps))
    assert steps[0] == 0 and steps[-1] == n_total - 1
    assert len(steps) == min(n_points, n_total)
    assert all(isinstance(s, int) for s in steps)
    sched = log_spaced(n_total, n_points)
    assert [s for s in range(n_total + 5) if sched(s)] == steps


def test_log_spaced_is_roughly_geometric():
    steps = np.array(log_spaced_steps(100_000, 30))
    ratios = (steps[-10:] + 1) / (steps[-11:-1] + 1)      # late points: rounding is negligible
    expected = math.exp(math.log(100_000) / 29)
    np.testing.assert_allclose(ratios, expected, rtol=0.01)


def test_at_and_combinations():
    a, b = at([0, 5, 50, 5]), every(5)
    assert [s for s in range(60) if (a & b)(s)] == [0, 5, 50]
    assert [s for s in range(12) if (at([1]) | b)(s)] == [0, 1, 5, 10]
    plain = lambda step: step == 3  # noqa: E731
    assert (b | plain)(3) and (plain | b)(3) and not (b & plain)(3)
    assert not any(never()(s) for s in range(10))


def test_repr_is_readable():
    assert repr(every(5)) == "every(5)"
    assert repr(every(5) | log_spaced(100, 10)) == "(every(5) | log_spaced(100, 10))"
    assert repr(at([3, 1])) == "at([1, 3])"
    assert "..." in repr(at(range(20)))


@pytest.mark.parametrize("call,error,text", [
    (lambda: every(0), ValueError, "n must be >= 1, got 0"),
    (lambda: every(2.0), TypeError, "2.0"),
    (lambda: every(True), TypeError, "True"),
    (lambda: every(3, start=-1), ValueError, "-1"),
    (lambda: at("12"), TypeError, "'12'"),
    (lambda: at([1, -2]), ValueError, "-2"),
    (lambda: at([1.5]), TypeError, "1.5"),
    (lambda: log_spaced(0, 3), ValueError, "n_total must be >= 1, got 0"),
    (lambda: log_spaced(100, 1), ValueError, "n_points must be >= 2, got 1"),
    (lambda: log_spaced(100, "5"), TypeError, "'5'"),
    (lambda: as_schedule(5), TypeError, "5"),
    (lambda: every(2) | 3, TypeError, "3"),
])
def test_bad_arguments_name_the_value(call, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        call()


def test_as_schedule_wraps_callables():
    wrapped = as_schedule(lambda s: s > 2)
    assert isinstance(wrapped, Schedule) and wrapped(3) and not wrapped(1)
    assert as_schedule(wrapped) is wrapped
