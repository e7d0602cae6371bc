"""Optimiser phases (train.phases): plan, continuity across the switch, bit-exact resume inside a later
phase, the `dynamics run` wiring and config errors."""

import numpy as np
import pytest
import torch

import dynamics
from dynamics.errors import ConfigError
from trainers import train
from trainers.optimizers import batch_loss, make_optimizer
from trainers.phases import phase_at, phase_plan, phases_name
from trainers.setup import build_model, prepare


def read(path):
    tree = dynamics.open_run(path)
    return (tree["metrics"].to_dataset().load(), tree["checkpoints"].to_dataset().load(),
            tree["params"].to_dataset().load())


def phased(tiny, first, second, epochs=1):
    # digits tiny: 160 train, batch 16 → pool 144 → 9 steps per epoch; 3 epochs = 27 steps
    return tiny(train={"steps": 0, "epochs": 3, "phases": [{"optimizer": first, "epochs": epochs},
                                                           {"optimizer": second}]})


def test_plan_and_lookup():
    plan = phase_plan([{"optimizer": "adam", "epochs": 2}, {"optimizer": "gn"}], 9, 27)
    assert [(p.optimizer, p.start, p.stop) for p in plan] == [("adam", 0, 18), ("gn", 18, 27)]
    assert [phase_at(plan, s).index for s in (0, 17, 18, 26)] == [0, 0, 1, 1]
    assert phases_name([{"optimizer": "adam"}, {"optimizer": "gn"}]) == "adam-then-gn"
    with pytest.raises(ConfigError, match=r"train.phases\[0\].epochs is missing"):
        phase_plan([{"optimizer": "adam"}, {"optimizer": "gn"}], 9, 27)
    with pytest.raises(ConfigError, match=r"train.phases\[1\].*does not fit"):
        phase_plan([{"optimizer": "adam", "epochs": 2}, {"optimizer": "gn", "epochs": 2}], 9, 27)
    with pytest.raises(ConfigError, match=r"train.phases\[1\] \(epochs = None\) does not fit"):  # nothing left
        phase_plan([{"optimizer": "adam", "epochs": 3}, {"optimizer": "gn"}], 9, 27)
    with pytest.raises(ConfigError, match=r"train.phases\[0\] \(epochs = 4\) does not fit"):
        phase_plan([{"optimizer": "adam", "epochs": 4}, {"optimizer": "gn"}], 9, 27)


def test_adam_then_gn_is_continuous(tmp_path, tiny):
    config = phased(tiny, "adam", "gn")
    metrics, checkpoints, params = read(train(config, "adam-then-gn", tmp_path / "p.zarr", seed=2, progress=False))
    pure = read(train(tiny(train={"steps": 0, "epochs": 3}), "adam", tmp_path / "a.zarr", seed=2, progress=False))
    np.testing.assert_array_equal(metrics["phase"].values, [0] * 9 + [1] * 18)
    np.testing.assert_array_equal(metrics["lr"].values, [1e-3] * 9 + [0.1] * 18)
    assert np.all(np.isnan(metrics["gn_residual"].values[:9])) and np.all(metrics["gn_residual"].values[9:] < 1e-8)
    # phase 0 is exactly a plain Adam run; the switch step is a checkpoint
    steps = checkpoints["checkpoint_step"].values.tolist()
    assert 9 in steps
    for name in params.data_vars:
        i, j = steps.index(9), pure[1]["checkpoint_step"].values.tolist().index(9) if 9 in pure[1]["checkpoint_step"].values else None
        if j is not None:
            np.testing.assert_array_equal(params[name].values[i], pure[2][name].values[j])
    for name in ("loss", "loss_after", "other_loss_after"):
        np.testing.assert_array_equal(metrics[name].values[:9], pure[0][name].values[:9])
    # the first GN update starts from the parameters at the switch: recompute it from the stored ones
    experiment = prepare(config)
    model = build_model(config.model, experiment.x.shape[1], experiment.n_classes, 2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(params[name.replace(".", "__")].values[steps.index(9)]))
    generator = torch.Generator().manual_seed(2)
    for _ in range(2):  # the permutations of epochs 0 and 1
        order = torch.randperm(len(experiment.pool), generator=generator)
    batch = experiment.pool[order[:16]]
    stepper = make_optimizer("gn", config.optimizer("gn"), model, "ce")
    result = stepper.step(experiment.x[batch], experiment.y[batch])
    assert float(metrics["loss"].values[9]) == pytest.approx(float(result.loss), rel=1e-12)
    with torch.no_grad():
        after = float(batch_loss(model(experiment.x[batch]), experiment.y[batch], "ce"))
    assert float(metrics["loss_after"].values[9]) == pytest.approx(after, rel=1e-12)


@pytest.mark.parametrize("stop_at", [13, 9])  # inside the second (Adam) phase; exactly at the switch
def test_resume_inside_a_later_phase_is_bit_exact(tmp_path, tiny, stop_at):
    config = phased(tiny, "gn", "adam")
    whole = read(train(config, "gn-then-adam", tmp_path / "whole.zarr", seed=1, progress=False))
    path = tmp_path / "cut.zarr"

    def interrupt(step):
        if step == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, "gn-then-adam", path, seed=1, progress=False, callback=interrupt)
    assert dynamics.open_run(path).attrs["status"] == "interrupted"
    resumed = read(train(config, "gn-then-adam", path, seed=1, resume=True, progress=False))
    for name in whole[0].data_vars:
        if name != "time":
            np.testing.assert_array_equal(whole[0][name].values, resumed[0][name].values, err_msg=name)
    for name in ("train_loss", "test_loss", "ntk", "checkpoint_step"):
        np.testing.assert_array_equal(whole[1][name].values, resumed[1][name].values, err_msg=name)
    for name in whole[2].data_vars:
        np.testing.assert_array_equal(whole[2][name].values, resumed[2][name].values, err_msg=name)


def test_unknown_phase_optimizer_is_a_config_error(tmp_path, tiny):
    config = tiny(train={"steps": 0, "epochs": 3, "phases": [{"optimizer": "nope", "epochs": 1},
                                                             {"optimizer": "gn"}]})
    with pytest.raises(ConfigError, match="nope"):
        train(config, "nope-then-gn", tmp_path / "x.zarr", progress=False)
    with pytest.raises(ConfigError, match="train.phases"):
        tiny(train={"phases": [{"optimizer": "adam", "epochs": 0}]})
