"""Impossible resume states are refused before training continues (issue 22 §1): a step beyond the
training length (the reported case: a run interrupted at its 5th checkpoint whose state said step
10⁶ resumed "complete" with 5 of 11 checkpoints), a state older than the store's commits, a state
ahead of the store's rows, inconsistent counters, other weights. Each is one error that names the
state file and the reason, and leaves the store — status, rows, checkpoints — as it was. The states
are real files written by the training loop, edited or swapped as a user or a restore would."""

import json
import shutil

import numpy as np
import pytest
import torch

import dynamics
from dynamics.errors import StoreError
from trainers import train

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def interrupt_at(step, keep=None):
    """Callback: copy the resume state saved by the checkpoint at step ``keep[0]`` to ``keep[1]``;
    Ctrl-C after step ``step``."""
    def callback(current):
        if keep is not None and current == keep[0]:
            shutil.copy(keep[2] / "resume" / "state.pt", keep[1])
        if current == step:
            raise KeyboardInterrupt
    return callback


def snapshot(path):
    tree = dynamics.open_run(path)
    return (tree.attrs["status"], tree["metrics"]["step"].values.tolist(),
            tree["checkpoints"]["checkpoint_step"].values.tolist())


def edit_state(path, **changes):
    state_file = path / "resume" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    for key, value in changes.items():
        state[key] = value(state) if callable(value) else value
    torch.save(state, state_file)


@pytest.fixture
def cut(tmp_path, tiny):
    """An adam run of the tiny config interrupted at step 9 (between checkpoints), its schedule."""
    config = tiny()
    path = tmp_path / "cut.zarr"
    with pytest.raises(KeyboardInterrupt):
        train(config, "adam", path, seed=3, progress=False, callback=interrupt_at(9))
    schedule = json.loads(dynamics.open_run(path).attrs["config"])["schedule"]
    return config, path, schedule


def refused(config, path, match):
    before = snapshot(path)
    with pytest.raises(StoreError, match=match) as info:
        train(config, "adam", path, seed=3, resume=True, progress=False)
    message = str(info.value)
    assert "\n" not in message and str(path / "resume" / "state.pt") in message
    assert "stays 'interrupted'" in message
    assert snapshot(path) == before            # status, rows and checkpoints untouched
    assert not (path / ".lock").exists()


def test_a_step_beyond_the_training_length_is_refused(cut):
    config, path, schedule = cut
    edit_state(path, step=10 ** 6)
    refused(config, path, r"ResumeStateError: it is at step 1000000, outside the run's 14 training steps")


def test_counters_that_do_not_give_the_step_are_refused(cut):
    config, path, schedule = cut
    edit_state(path, position=lambda s: s["position"] + 1)
    refused(config, path, "do not give step 9 with")


def test_a_state_ahead_of_the_store_rows_is_refused(cut):
    config, path, schedule = cut
    per_epoch = schedule["steps_per_epoch"]
    edit_state(path, step=12, epoch=12 // per_epoch, position=12 % per_epoch)
    refused(config, path, r"it is at step 12, but the store's metrics end at step 9: rows would be missing")


def test_a_state_older_than_the_store_is_refused_and_a_legitimately_older_one_resumes(tmp_path, tiny):
    """A state saved two checkpoints back (a restored backup) is refused; one checkpoint back with
    rows up to the next checkpoint — what a kill between a checkpoint's commit and its state leaves —
    resumes and ends equal to the uninterrupted run."""
    config = tiny()
    full = snapshot_values(train(config, "adam", tmp_path / "full.zarr", seed=3, progress=False))
    steps = json.loads(dynamics.open_run(tmp_path / "full.zarr").attrs["config"])["schedule"]["checkpoint_steps"]
    first, second, third = [s for s in steps if s > 0][:3]
    for name, stop, expected in (("older", third, "refused"), ("one-back", second, "resumes")):
        path, saved = tmp_path / f"{name}.zarr", tmp_path / f"{name}-state.pt"
        with pytest.raises(KeyboardInterrupt):
            train(config, "adam", path, seed=3, progress=False, callback=interrupt_at(stop, (first, saved, path)))
        shutil.copy(saved, path / "resume" / "state.pt")   # the state of the checkpoint at `first`
        if expected == "refused":
            refused(config, path, rf"it is at step {first}, older than the store, which holds checkpoints at "
                                  rf"steps \[{third}\]")
        else:
            train(config, "adam", path, seed=3, resume=True, progress=False)
            got = snapshot_values(path)
            assert got[0] == "complete"
            for a, b in zip(got[1:], full[1:]):
                np.testing.assert_array_equal(a, b)


def snapshot_values(path):
    tree = dynamics.open_run(path)
    return (tree.attrs["status"], tree["metrics"]["loss"].values, tree["checkpoints"]["test_loss"].values,
            np.concatenate([v.values.ravel() for v in tree["params"].to_dataset().data_vars.values()]))


def test_weights_of_another_run_are_refused(tmp_path, tiny):
    config = tiny()
    path = tmp_path / "cut.zarr"
    steps = tiny_checkpoints(tmp_path, config)
    with pytest.raises(KeyboardInterrupt):
        train(config, "adam", path, seed=3, progress=False, callback=interrupt_at(steps[2]))   # at a checkpoint

    def nudged(state):
        model = dict(state["model"])
        name = next(k for k in model if k.endswith("linear.weight"))   # a trained parameter (not a buffer)
        model[name] = model[name] + 1e-9
        return model
    edit_state(path, model=nudged)
    refused(config, path, rf"its parameter 'blocks.0.F.linear.weight' at step {steps[2]} differs from the store's checkpoint at that "
                          rf"step: the state belongs to another run")
    edit_state(path, model=lambda s: {k: v for k, v in s["model"].items() if k != "blocks.0.G.linear.bias"})
    refused(config, path, r"its model does not fit the model of the config \(differs in \['blocks.0.G.linear.bias'\]\)")


def tiny_checkpoints(tmp_path, config):
    from trainers.setup import prepare
    return prepare(config).checkpoint_steps


def test_the_command_line_refuses_in_one_line_with_status_2(cut, capsys):
    from dynamics.cli import main
    config, path, _ = cut
    edit_state(path, step=10 ** 6)
    cfg = path.parent / "tiny.toml"
    from trainers.config_toml import config_to_toml
    cfg.write_text(config_to_toml(config))
    assert main(["train", "--config", str(cfg), "--optimizer", "adam", "--seed", "3", "--out", str(path),
                 "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outside the run's 14 training steps" in err and "Traceback" not in err
    assert dynamics.open_run(path).attrs["status"] == "interrupted"
