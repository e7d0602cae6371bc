"""Loop invariants against recomputation, determinism, and resume equality after interrupts."""

import json
import math

import numpy as np
import pytest
import torch

import dynamics
from dynamics.errors import ConfigError, StoreError
from trainers import store_name, train
from trainers.optimizers import batch_loss
from trainers.setup import build_model, prepare

METRICS = ["loss", "loss_after", "other_loss", "other_loss_after", "next_loss", "next_loss_after", "phase", "lr", "grad_norm", "update_norm", "gn_residual"]


def read(path):
    tree = dynamics.open_run(path)
    return (tree["metrics"].to_dataset().load(), tree["checkpoints"].to_dataset().load(),
            tree["params"].to_dataset().load(), dict(tree.attrs))


def model_at(config, seed, params, index):
    """The model with the parameters of checkpoint ``index`` (rebuilt from the store)."""
    experiment = prepare(config)
    model = build_model(config.model, experiment.x.shape[1], experiment.n_classes, seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(params[name.replace(".", "__")].values[index]))
    return experiment, model


def batches(experiment, seed, steps):
    """Mini-batch indices of steps 1..steps from the documented data order (one randperm per epoch)."""
    generator, out = torch.Generator().manual_seed(seed), []
    while len(out) < steps:
        order = torch.randperm(len(experiment.pool), generator=generator)
        for k in range(experiment.steps_per_epoch):
            out.append(experiment.pool[order[k * experiment.batch_size:(k + 1) * experiment.batch_size]])
    return out[:steps]


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory):
    """Uninterrupted runs of the tiny config (seed 3) shared by the tests of this module."""
    from conftest import tiny_config

    folder = tmp_path_factory.mktemp("full")
    return {name: read(train(tiny_config(), name, folder / f"{name}.zarr", seed=3, progress=False))
            for name in ("gn", "adam")}


@pytest.mark.parametrize("optimizer", ["gn", "adam"])
def test_metrics_equal_recomputation(full_runs, tiny, optimizer):
    config = tiny()
    metrics, checkpoints, params, attrs = full_runs[optimizer]
    assert attrs["status"] == "complete"
    stored = json.loads(attrs["config"])
    assert stored["optimizer"] == optimizer and stored["seed"] == 3 and stored["train"]["seed"] == 3
    assert json.loads(attrs["versions"])["torch"] == torch.__version__
    steps = checkpoints["checkpoint_step"].values.tolist()
    assert steps == stored["schedule"]["checkpoint_steps"] and steps[0] == 0 and steps[-1] == 14
    np.testing.assert_array_equal(metrics["step"].values, np.arange(1, 15))
    # the other batch's "before" is the previous step's "after"
    np.testing.assert_array_equal(metrics["other_loss"].values[1:], metrics["other_loss_after"].values[:-1])
    experiment = prepare(config)
    assert len(set(experiment.other.tolist()) & set(experiment.pool.tolist())) == 0
    order = batches(experiment, 3, 15)  # the 14 trained batches and the one a 15th step would take
    assert experiment.steps_per_epoch < 14  # so the next batch crosses an epoch boundary below
    x, y = experiment.x, experiment.y
    for index, step in enumerate(steps):
        _, model = model_at(config, 3, params, index)
        with torch.no_grad():
            other = float(batch_loss(model(x[experiment.other]), y[experiment.other], "ce"))
            if step > 0:  # after the update of `step`
                own_after = float(batch_loss(model(x[order[step - 1]]), y[order[step - 1]], "ce"))
                row = metrics.sel(step=step)
                assert float(row["loss_after"]) == pytest.approx(own_after, rel=1e-12)
                assert float(row["other_loss_after"]) == pytest.approx(other, rel=1e-12)
                # the next training batch (the one step + 1 trains on) after this update
                upcoming = float(batch_loss(model(x[order[step]]), y[order[step]], "ce"))
                assert float(row["next_loss_after"]) == pytest.approx(upcoming, rel=1e-12)
        if step < 14:  # before the update of step + 1: loss and gradient
            model.zero_grad()
            value = batch_loss(model(x[order[step]]), y[order[step]], "ce")
            value.backward()
            grad = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
            row = metrics.sel(step=step + 1)
            assert float(row["loss"]) == pytest.approx(float(value.detach()), rel=1e-12)
            assert float(row["other_loss"]) == pytest.approx(other, rel=1e-12)
            with torch.no_grad():  # the batch after the one step + 1 trains on, before that update
                upcoming = float(batch_loss(model(x[order[step + 1]]), y[order[step + 1]], "ce"))
            assert float(row["next_loss"]) == pytest.approx(upcoming, rel=1e-12)
            assert float(row["grad_norm"]) == pytest.approx(grad, rel=1e-10)
        if index + 1 < len(steps) and steps[index + 1] == step + 1:  # consecutive checkpoints
            delta = [params[k].values[index + 1] - params[k].values[index] for k in params.data_vars]
            norm = math.sqrt(sum(float((d ** 2).sum()) for d in delta))
            assert float(metrics.sel(step=step + 1)["update_norm"]) == pytest.approx(norm, rel=1e-10)
    assert steps[1] == 1  # so the update-norm check above ran
    _, model = model_at(config, 3, params, len(steps) - 1)
    with torch.no_grad():
        test_x, test_y = experiment.eval_test
        test_acc = float((model(test_x).argmax(1) == test_y).double().mean())
    assert float(checkpoints["test_acc"].values[-1]) == test_acc
    residual = metrics["gn_residual"].values
    if optimizer == "gn":
        assert np.all(residual < 1e-8)
        assert np.all(metrics["lr"].values == 0.1)
        assert np.all(metrics["loss_after"].values < metrics["loss"].values)
    else:
        assert np.all(np.isnan(residual))
    assert np.all(metrics["time"].values > 0)


def test_same_seed_same_numbers_other_seed_differs(tmp_path, tiny, full_runs):
    config = tiny()
    a = full_runs["adam"]
    b = read(train(config, "adam", tmp_path / "b.zarr", seed=3, progress=False))
    c = read(train(config, "adam", tmp_path / "c.zarr", seed=2, progress=False))
    for name in METRICS:
        np.testing.assert_array_equal(a[0][name].values, b[0][name].values)
    for name in a[2].data_vars:
        np.testing.assert_array_equal(a[2][name].values, b[2][name].values)
    np.testing.assert_array_equal(a[1]["ntk"].values, b[1]["ntk"].values)
    assert not np.array_equal(a[0]["loss"].values, c[0]["loss"].values)
    np.testing.assert_array_equal(a[1]["checkpoint_step"].values, c[1]["checkpoint_step"].values)


def assert_same_run(first, second):
    for name in METRICS:
        np.testing.assert_array_equal(first[0][name].values, second[0][name].values, err_msg=name)
    np.testing.assert_array_equal(first[0]["step"].values, second[0]["step"].values)
    for name in ("train_loss", "train_acc", "test_loss", "test_acc", "ntk", "checkpoint_step"):
        np.testing.assert_array_equal(first[1][name].values, second[1][name].values, err_msg=name)
    for name in first[2].data_vars:
        np.testing.assert_array_equal(first[2][name].values, second[2][name].values, err_msg=name)


def interrupt_at(step):
    def callback(current):
        if current == step:
            raise KeyboardInterrupt
    return callback


@pytest.mark.parametrize("optimizer, stop", [("adam", 6), ("gn", 9)])
def test_resume_after_interrupt_equals_uninterrupted(tmp_path, tiny, full_runs, optimizer, stop):
    config = tiny()
    full = full_runs[optimizer]
    path = tmp_path / "cut.zarr"
    with pytest.raises(KeyboardInterrupt):
        train(config, optimizer, path, seed=3, progress=False, callback=interrupt_at(stop))
    metrics, _, _, attrs = read(path)
    assert attrs["status"] == "interrupted" and int(metrics["step"].values[-1]) == stop
    train(config, optimizer, path, seed=3, resume=True, progress=False)
    resumed = read(path)
    assert resumed[3]["status"] == "complete"
    assert_same_run(full, resumed)


def test_resume_after_hard_interrupt_mid_step(tmp_path, tiny, full_runs, monkeypatch):
    """A KeyboardInterrupt inside an update: the state of the last checkpoint is the one resumed."""
    config = tiny()
    full = full_runs["adam"]
    path = tmp_path / "cut.zarr"
    calls = {"n": 0}
    original = torch.optim.Adam.step

    def flaky_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", flaky_step)
    with pytest.raises(KeyboardInterrupt):
        train(config, "adam", path, seed=3, progress=False)
    monkeypatch.setattr(torch.optim.Adam, "step", original)
    assert read(path)[3]["status"] == "interrupted"
    train(config, "adam", path, seed=3, resume=True, progress=False)
    assert_same_run(full, read(path))


def test_resume_of_complete_store_is_a_no_op_and_store_errors(tmp_path, tiny):
    config = tiny()
    path = train(config, "sgd", tmp_path / "s.zarr", progress=False, resume=True)  # missing → fresh
    before = read(path)
    train(config, "sgd", path, resume=True, progress=False)
    assert_same_run(before, read(path))
    with pytest.raises(StoreError):
        train(config, "sgd", path, progress=False)  # exists, no resume
    changed = tiny(optimizers={"sgd": {"lr": 0.02}})
    with pytest.raises((StoreError, ConfigError), match="config"):
        train(changed, "sgd", path, resume=True, progress=False)


def test_impossible_sizes_name_the_key(tmp_path, tiny):
    with pytest.raises(ConfigError, match=r"train\.batch_size = 90 is too large for 160"):
        train(tiny(train={"batch_size": 90}), "sgd", tmp_path / "a.zarr", progress=False)
    with pytest.raises(ConfigError, match=r"data\.probe_size = 150 exceeds"):
        train(tiny(data={"probe_size": 150}), "sgd", tmp_path / "b.zarr", progress=False)
    for seed in (-1, 2**63, 2**64 + 1, 1.5, True):
        with pytest.raises(ConfigError, match=r"seed must be an int in \[0, 2\*\*63 - 1\], got"):
            train(tiny(), "sgd", tmp_path / "c.zarr", seed=seed, progress=False)
    assert not (tmp_path / "c.zarr").exists()


def test_divergence_is_reported(tmp_path, tiny):
    with pytest.raises(ConfigError, match=r"optimizer 'sgd' diverged at step \d+.*optimizers\.sgd"):
        train(tiny(optimizers={"sgd": {"lr": 1e6}}), "sgd", tmp_path / "d.zarr", progress=False)
    assert read(tmp_path / "d.zarr")[3]["status"] == "failed"


def test_mlp_with_kernel_gn_and_torch_optim_by_name(tmp_path, tiny):
    # the preset's gn table stays: only the optimisers that run are checked against the model
    config = tiny(model={"kind": "mlp"}, train={"optimizers": ["kgn", "rms"]},
                  optimizers={"kgn": {"lr": 0.5}, "rms": {"kind": "RMSprop", "lr": 1e-3}})
    assert config.optimizers["gn"].kind == "gn" and config.model.kind == "mlp"
    with pytest.raises(ConfigError, match=r"optimizer 'gn' needs model\.kind = 'revmlp'"):
        train(config, "gn", tmp_path / "g.zarr", progress=False)
    assert not (tmp_path / "g.zarr").exists()
    metrics = read(train(config, "kgn", tmp_path / "k.zarr", progress=False))[0]
    assert np.all(metrics["gn_residual"].values < 1e-6)
    assert np.all(metrics["loss_after"].values < metrics["loss"].values)
    assert np.all(metrics["lr"].values == 0.5)
    metrics = read(train(config, "rms", tmp_path / "r.zarr", progress=False))[0]
    assert np.all(np.isnan(metrics["gn_residual"].values))


def test_store_name():
    assert store_name("gn", 0, 1) == "gn.zarr"
    assert store_name("gn", 1, 3) == "gn-seed1.zarr"


def test_resume_of_store_without_state_starts_over(tmp_path, tiny, full_runs):
    """Interrupted before the first resume state was saved: --resume trains from scratch in place."""
    config = tiny()
    path = tmp_path / "early.zarr"
    train(config, "adam", path, seed=3, progress=False)
    (path / "resume" / "state.pt").unlink()
    train(config, "adam", path, seed=3, resume=True, progress=False)
    assert_same_run(full_runs["adam"], read(path))


def test_float32_run_matches_recomputation(tmp_path, tiny):
    """float32 model: stored losses equal a float32 recomputation to 1e-6 relative (same kernels)."""
    config = tiny(model={"dtype": "float32"}, train={"steps": 4, "checkpoints": 2})
    metrics, _, params, _ = read(train(config, "adam", tmp_path / "f.zarr", progress=False))
    experiment, model = model_at(config, 0, params, -1)  # parameters after the last step
    assert experiment.x.dtype == torch.float32
    last = batches(experiment, 0, 4)[-1]
    with torch.no_grad():
        own = float(batch_loss(model(experiment.x[last]), experiment.y[last], "ce"))
        other = float(batch_loss(model(experiment.x[experiment.other]), experiment.y[experiment.other], "ce"))
    assert float(metrics["loss_after"].values[-1]) == pytest.approx(own, rel=1e-6)
    assert float(metrics["other_loss_after"].values[-1]) == pytest.approx(other, rel=1e-6)


@pytest.mark.parametrize("total,checkpoints,early", [(14, 5, 1), (100, 5, 10), (1170, 12, 117), (4, 2, 1)])
def test_checkpoint_schedule_includes_ten_percent(total, checkpoints, early):
    """Step 0, the last step and the step nearest 10 % of the run are always checkpoints."""
    from dynamics.schedules import log_spaced_steps
    from trainers.setup import checkpoint_schedule

    steps = checkpoint_schedule(total, checkpoints)
    assert steps[0] == 0 and steps[-1] == total and early in steps
    assert set(log_spaced_steps(total + 1, min(checkpoints, total + 1))) <= set(steps)
    assert steps == sorted(set(steps)) and len(steps) <= checkpoints + 1
