"""NTK spectrum against numpy's eigh and explicit projections (centring with an explicit H matrix)."""

import warnings

import numpy as np
import pytest
import torch

from analysis import analyze
from analysis.ntk_spectrum import ntk_spectrum, spectrum
from analysis_runs_fixture import write_run
from dynamics import open_run
from dynamics.store.attributes import cf_attrs


def _kernel(n, rank, seed, scale=1.0):
    features = np.random.default_rng(seed).standard_normal((n, rank))
    return scale * features @ features.T


def _reference(kernel, y, centered):
    """λ descending, Σ_{i≤k} ‖U_kᵀY‖² / ‖Y‖², λ₁/λ_N — with numpy.linalg.eigh and an explicit H."""
    n = kernel.shape[0]
    targets = np.eye(int(y.max()) + 1)[y] if y.ndim == 1 else y
    if centered:
        h = np.eye(n) - np.ones((n, n)) / n
        kernel, targets = h @ kernel @ h, h @ targets
    values, vectors = np.linalg.eigh(kernel)
    values, vectors = values[::-1], vectors[:, ::-1]
    shares = np.array([np.sum((vectors[:, :k].T @ targets) ** 2) for k in range(1, n + 1)])
    return values, shares / np.sum(targets ** 2)


@pytest.mark.parametrize("n, rank, centered, scale", [(12, 20, False, 1.0), (12, 20, True, 1.0),
                                                      (30, 50, False, 1e-200), (9, 4, False, 1e150)])
def test_spectrum_equals_eigh_and_explicit_projections(n, rank, centered, scale):
    kernel = _kernel(n, rank, seed=n, scale=scale)
    y = np.random.default_rng(n + 1).integers(0, 4, n)
    values, alignment, condition = spectrum(kernel, y, centered=centered)
    ref_values, ref_alignment = _reference(kernel, y, centered)
    np.testing.assert_allclose(values, ref_values, rtol=1e-9, atol=1e-9 * abs(ref_values[0]))
    unique = min(rank, n)   # past the rank the eigenvectors of the zero eigenvalue are any basis of the null space
    np.testing.assert_allclose(alignment[:unique], ref_alignment[:unique], rtol=1e-9, atol=1e-12)
    assert alignment[-1] == pytest.approx(1.0)
    plain = np.linalg.eigvalsh(kernel)
    if rank >= n:
        assert condition == pytest.approx(plain.max() / plain.min(), rel=1e-8)
    else:   # rank-deficient: numerically singular
        assert condition == np.inf


def test_float_targets_torch_input_and_undefined_cases():
    kernel = _kernel(8, 10, seed=3)
    y = np.random.default_rng(4).standard_normal((8, 3))
    values, alignment, _ = spectrum(torch.from_numpy(kernel), y)
    np.testing.assert_allclose(alignment, _reference(kernel, y, False)[1], rtol=1e-9)
    ds = ntk_spectrum(kernel, np.zeros(8, dtype=int), centered=True)   # one class: HY = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, alignment, _ = spectrum(kernel, np.zeros(8, dtype=int), centered=True)
    assert np.all(np.isnan(alignment)) and any("undefined" in str(w.message) for w in caught)
    assert list(ds["ntk_mode"].values) == list(range(1, 9))
    assert np.isnan(spectrum(np.zeros((3, 3)), np.arange(3))[2])
    with pytest.raises(ValueError, match="square"):
        spectrum(np.ones((3, 4)), np.arange(3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        spectrum(np.full((2, 2), np.nan), np.arange(2))


def test_analysis_holds_the_spectrum_of_every_stored_kernel(tmp_path):
    store = write_run(tmp_path / "sgd.zarr", steps=20, checkpoint_every=10)
    result = analyze(store, write=False)
    tree = open_run(store)
    kernels = tree["checkpoints"]["ntk"].values
    labels = tree["probe"]["y"].values
    n = kernels.shape[1]
    assert result["ntk_eigenvalues"].dims == ("checkpoint", "ntk_mode") and result.sizes["ntk_mode"] == n
    for c in range(kernels.shape[0]):
        values, shares = _reference(kernels[c].astype(np.float64), labels.astype(np.int64), False)
        np.testing.assert_allclose(result["ntk_eigenvalues"].values[c], values, rtol=1e-8, atol=1e-10 * values[0])
        np.testing.assert_allclose(result["ntk_label_alignment"].values[c], shares, rtol=1e-8, atol=1e-10)
    for name in ("ntk_eigenvalues", "ntk_label_alignment", "ntk_condition_number"):
        assert {k: result[name].attrs[k] for k in ("long_name", "units", "description")} == cf_attrs("analysis", name)
    assert np.all(np.isnan(result["linearized_distance_test"].values))   # not recorded: NaN, same variables
