"""Every feature statistic gives the value of the unscaled features at any scale (issue 21 item 7):
the linear probe fell from 0.88 at scale 1 to 0.53 at 1e160 or 1e-170 (its standardisation
overflowed). All of them read features through analysis.arrays.feature_matrix (the power-of-two
rule of analysis.scaling); each is compared with its own value at scale 1."""

import numpy as np
import pytest
import xarray as xr

from analysis import effective_rank, linear_cka, rbf_cka, target_alignment
from analysis.checkpoint_metrics import representation_metrics, weight_metrics
from analysis.probes import linear_probe_accuracy, linear_probe_r2
from analysis.rank import KINDS

SCALES = (1e160, 1e-160, 1e-170)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n, d = 90, 6
    labels = np.arange(n) % 3
    x = rng.normal(size=(3, d))[labels] * 1.2 + rng.normal(size=(n, d)) * np.array([1, 2, 0.5, 3, 1, 0.1])
    return x, labels, x @ rng.normal(size=d) + rng.normal(size=n)


def test_linear_probe_accuracy_and_r2(data):
    x, labels, targets = data
    accuracy, r2 = linear_probe_accuracy(x, labels), linear_probe_r2(x, targets)
    assert 0.5 < accuracy < 1.0 and 0.3 < r2 < 1.0     # neither saturated nor at chance
    for scale in SCALES:
        assert linear_probe_accuracy(x * scale, labels) == pytest.approx(accuracy, abs=1.5 / len(labels)), scale
        assert linear_probe_r2(x * scale, targets) == pytest.approx(r2, rel=1e-9), scale
        assert linear_probe_r2(x, targets * scale) == pytest.approx(r2, rel=1e-9), scale


@pytest.mark.parametrize("kind", KINDS)
def test_effective_ranks_of_data_and_kernels(data, kind):
    x = data[0][:, :5] @ np.diag([1, 1e-2, 1e-4, 1e-7, 1e-13])     # a spread spectrum
    kernel = x @ x.T
    for matrix, m in (("data", x), ("kernel", kernel)):
        reference = effective_rank(m, kind=kind, matrix=matrix)
        for scale in SCALES:
            assert effective_rank(m * scale, kind=kind, matrix=matrix) == pytest.approx(reference, rel=1e-9), \
                (matrix, scale)
    # an explicit threshold is absolute: it scales with the data
    sigma = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    tol = float(np.sqrt(sigma[2] * sigma[3]))
    for scale in (1.0, *SCALES):
        assert effective_rank(x * scale, kind="numerical", tol=tol * scale) == 3.0


def test_cka_and_rbf_cka(data):
    x = data[0]
    y = np.tanh(x @ np.random.default_rng(1).normal(size=(6, 4)))
    for function in (linear_cka, rbf_cka):
        reference = function(x, y)
        for scale in SCALES:
            assert function(x * scale, y) == pytest.approx(reference, rel=1e-9), (function.__name__, scale)
            assert function(x * scale, y / scale) == pytest.approx(reference, rel=1e-9), (function.__name__, scale)


def test_target_alignment_of_scaled_kernels_and_targets(data):
    x, labels, targets = data
    kernel = x @ x.T
    for y, task in ((labels, "classification"), (targets, "regression")):
        reference = target_alignment(kernel, y, task=task)
        for scale in SCALES:
            assert target_alignment(kernel * scale, y, task=task) == pytest.approx(reference, rel=1e-9)
        if task == "regression":
            assert target_alignment(kernel, targets * 1e160) == pytest.approx(reference, rel=1e-9)
            assert target_alignment(kernel, targets * 1e-170) == pytest.approx(reference, rel=1e-9)


def test_run_analysis_in_memory_and_in_chunks(data):
    """The per-checkpoint path of analyze, representations held whole and read in probe chunks."""
    x, labels, _ = data
    reps = np.stack([x, np.tanh(x), x ** 2])[:, :, :, None]       # (checkpoint, probe, unit, 1)

    def metrics(scale, max_memory):
        rep = xr.DataArray(reps * scale, dims=("checkpoint", "probe", "unit_a", "unit_b"), name="rep_a")
        return representation_metrics(rep, "classification", labels, np.array([True, False, True]),
                                      max_memory=max_memory, folds=3, max_iter=100)

    reference = metrics(1.0, 1 << 30)
    for scale in SCALES:
        for max_memory in (1 << 30, 2048):      # 2048 bytes: read in chunks of 128 rows... of 4 rows minimum
            got = metrics(scale, max_memory)
            for name in ("cka_init", "rep_effective_rank"):
                np.testing.assert_allclose(got[name], reference[name], rtol=1e-9, err_msg=f"{name} {scale}")
            if max_memory > 2048:
                np.testing.assert_allclose(got["probe_accuracy"], reference["probe_accuracy"], atol=1.5 / 90,
                                           equal_nan=True)


def test_weight_change_of_huge_and_tiny_parameters():
    rng = np.random.default_rng(2)
    history = rng.normal(size=(4, 5, 3)).cumsum(axis=0)
    reference = weight_metrics(xr.DataArray(history, dims=("checkpoint", "a", "b"), name="w"), 1 << 30)
    for scale in (1e200, 1e-200, *SCALES):
        got = weight_metrics(xr.DataArray(history * scale, dims=("checkpoint", "a", "b"), name="w"), 1 << 30)
        for key in ("rel", "cos"):
            np.testing.assert_allclose(got[key], reference[key], rtol=1e-12, err_msg=f"{key} {scale}")
        np.testing.assert_allclose(got["delta"], reference["delta"] * scale, rtol=1e-12)
        assert got["init_norm"] == pytest.approx(reference["init_norm"] * scale, rel=1e-12)
