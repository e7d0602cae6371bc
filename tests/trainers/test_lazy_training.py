"""train.linearized and train.sharpness in the training loop: stored scalars, their meaning, resume."""

import math
import warnings

import numpy as np
import pytest
import torch

import dynamics
from dynamics.curvature import top_eigenvalues
from dynamics.linearize import LINEAR_SCALARS
from dynamics.sharpness import SHARPNESS_SCALARS
from dynamics.store.attributes import cf_attrs
from trainers import train
from trainers.setup import build_model, prepare

LAZY = {"linearized": True, "sharpness": True}


def checkpoints(path):
    return dynamics.open_run(path)["checkpoints"].to_dataset().load()


@pytest.fixture(scope="module")
def lazy_runs(tmp_path_factory):
    """An sgd and a phased adam-then-gn run (9 Adam steps, then 9 GN steps) of the tiny config with both
    diagnostics on."""
    from conftest import tiny_config

    folder = tmp_path_factory.mktemp("lazy")
    config = tiny_config(train={**LAZY, "steps": 0, "epochs": 2, "checkpoints": 3,
                                "phases": [{"optimizer": "adam", "epochs": 1}, {"optimizer": "gn"}]})
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)   # no non-finite warning for what is NaN by definition
        for name in ("sgd", "adam-then-gn"):
            out[name] = checkpoints(train(config, name, folder / f"{name}.zarr", seed=1, progress=False))
    return config, out, folder


def test_every_scalar_is_stored_with_its_meaning(lazy_runs):
    config, runs, _ = lazy_runs
    for name, ds in runs.items():
        for var in (*LINEAR_SCALARS, *SHARPNESS_SCALARS):
            assert var in ds, (name, var)
            assert {k: ds[var].attrs[k] for k in ("long_name", "units", "description")} == cf_attrs("checkpoints", var)
        first, later = ds.isel(checkpoint=0), ds.isel(checkpoint=slice(1, None))
        assert math.isnan(float(first["linearized_distance_probe"]))   # f_t = f₀ at step 0
        for var in ("linearized_distance_probe", "linearized_distance_test", "linearized_test_acc", "sharpness",
                    "ggn_sharpness"):
            assert np.all(np.isfinite(later[var].values)), (name, var)
        assert float(first["linearized_test_acc"]) == float(first["test_acc"])   # f_lin = f at θ₀
        assert np.all(ds["ggn_sharpness"].values > 0)
    np.testing.assert_allclose(runs["sgd"]["sharpness_threshold"].values, 2 / 0.01)
    assert np.all(np.isnan(runs["sgd"]["preconditioned_sharpness"].values))
    phased = runs["adam-then-gn"]   # threshold and preconditioner follow the optimiser of the latest updates
    steps = phased["checkpoint_step"].values
    adam, gn = (steps > 0) & (steps <= 9), steps > 9
    assert adam.any() and gn.any()
    np.testing.assert_allclose(phased["sharpness_threshold"].values[adam], 38 / 1e-3)
    assert np.all(np.isfinite(phased["preconditioned_sharpness"].values[adam]))
    for var in ("preconditioned_sharpness", "sharpness_threshold"):   # no second moment before Adam's first step
        assert math.isnan(float(phased[var][0]))
    assert np.all(np.isnan(phased["sharpness_threshold"].values[gn]))
    assert np.all(np.isnan(phased["preconditioned_sharpness"].values[gn]))


def test_sharpness_is_the_top_eigenvalue_of_the_stored_parameters(lazy_runs):
    config, runs, folder = lazy_runs
    experiment = prepare(config)
    params = dynamics.open_run(folder / "sgd.zarr")["params"].to_dataset().load()
    model = build_model(config.model, experiment.x.shape[1], experiment.n_classes, 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(params[name.replace(".", "__")].values[-1]))
    x, y = experiment.x[experiment.probe], experiment.y[experiment.probe]
    for var, matrix in (("sharpness", "hessian"), ("ggn_sharpness", "ggn")):
        expected = float(top_eigenvalues(model, x, y, matrix=matrix)[0])
        assert float(runs["sgd"][var][-1]) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("optimizer, lr", [("sgd", 1e-5), ("gn", 1e-5)])
def test_twin_stays_with_the_model_at_tiny_step_sizes(tmp_path, tiny, optimizer, lr):
    """Trained on the same batches by the same optimiser, the distance is O(lr) (on other batches it would be O(1))."""
    distance = {}
    for scale in (1, 10):
        config = tiny(train={"linearized": True}, optimizers={optimizer: {"lr": lr * scale}})
        ds = checkpoints(train(config, optimizer, tmp_path / f"{optimizer}{scale}.zarr", seed=2, progress=False))
        distance[scale] = float(ds["linearized_distance_test"][-1])
    assert distance[1] < 1e-3
    assert 0.07 < distance[1] / distance[10] < 0.13, distance


def test_resume_with_the_twin_is_bit_exact(tmp_path, tiny):
    """Interrupted in the GN phase of adam-then-gn: the twin's parameters, optimiser and phase resume."""
    config = tiny(train={"linearized": True, "steps": 0, "epochs": 2,
                         "phases": [{"optimizer": "adam", "epochs": 1}, {"optimizer": "gn"}]})
    optimizer = "adam-then-gn"
    full = checkpoints(train(config, optimizer, tmp_path / "full.zarr", seed=3, progress=False))

    def interrupt(step):
        if step == 13:
            raise KeyboardInterrupt

    path = tmp_path / "cut.zarr"
    with pytest.raises(KeyboardInterrupt):
        train(config, optimizer, path, seed=3, progress=False, callback=interrupt)
    train(config, optimizer, path, seed=3, resume=True, progress=False)
    resumed = checkpoints(path)
    for var in LINEAR_SCALARS:
        np.testing.assert_array_equal(resumed[var].values, full[var].values, err_msg=var)


def test_config_keys_default_off(tiny):
    config = tiny()
    assert config.train.linearized is False and config.train.sharpness is False
    assert "linearized" in config.to_dict()["train"]
