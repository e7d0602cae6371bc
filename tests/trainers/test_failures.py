"""The divergence rule (issue 14, case 11) and `dynamics run` going on past a failed run (case 15).

Bounds come from the rule's text (trainers/failures.py): diverged when a loss after the update is not
finite or exceeds DIVERGENCE_FACTOR × the other batch's loss at step 0, recomputed here from a fresh
model; real stores on disk."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import dynamics
from dynamics.cli import main
from trainers import train
from trainers.failures import DIVERGENCE_FACTOR, Diverged, check_divergence
from trainers.optimizers import batch_loss
from trainers.setup import build_model, prepare


def test_rule_bounds_exactly():
    check_divergence("gn", 3, 2.0, {"loss_after": 2.0 * DIVERGENCE_FACTOR})          # at the bound: fine
    with pytest.raises(Diverged, match=r"optimizer 'gn' diverged at step 3 \(loss_after = 2e\+03 exceeds 1000 x the initial loss 2\)"):
        check_divergence("gn", 3, 2.0, {"loss_after": math.nextafter(2.0 * DIVERGENCE_FACTOR, math.inf)})
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(Diverged, match="is not finite"):
            check_divergence("sgd", 1, 2.0, {"other_loss_after": bad})
    check_divergence("sgd", 1, 0.0, {"loss_after": 1e30})    # an initial loss of 0: finiteness only


def _initial_other_loss(config, seed):
    experiment = prepare(config)
    model = build_model(config.model, experiment.x.shape[1], experiment.n_classes, seed)
    with torch.no_grad():
        return float(batch_loss(model(experiment.x[experiment.other]), experiment.y[experiment.other],
                                config.train.loss))


@pytest.mark.parametrize("optimizer, lr, at_step", [("gn", 1e6, 1), ("gn", 30.0, 2), ("sgd", 3.0, 3)],
                         ids=["gn-1e6-issue", "gn-30", "sgd-3"])
def test_diverging_run_fails_and_keeps_every_row_before(tmp_path, tiny, optimizer, lr, at_step):
    """Finite but absurd losses (the issue's GN at lr = 1e6 reached 1e126 and passed as complete)."""
    config = tiny(optimizers={optimizer: {"lr": lr}})
    path = tmp_path / "run.zarr"
    with pytest.raises(Diverged) as info:
        train(config, optimizer, path, progress=False)
    message = str(info.value)
    assert "\n" not in message and f"optimizer {optimizer!r} diverged at step" in message
    failed_step = int(message.split("at step ")[1].split(" ")[0])
    assert failed_step == at_step     # as measured for this tiny config (seed fixed): CPU-deterministic
    tree = dynamics.open_run(path)
    assert tree.attrs["status"] == "failed" and tree.attrs["error"] == f"Diverged: {message}"
    metrics = tree["metrics"].to_dataset().load()
    assert metrics["step"].values.tolist() == list(range(1, failed_step))    # every row before, not the bad one
    bound = DIVERGENCE_FACTOR * _initial_other_loss(config, config.train.seed)
    for name in ("loss_after", "other_loss_after") if failed_step > 1 else ():
        assert np.all(np.isfinite(metrics[name].values)) and np.all(metrics[name].values <= bound)
    assert not (path / ".lock").exists()


TOML = """preset = "digits"
name = "tiny"
[data]
n_train = 160
n_test = 60
probe_size = 16
[model]
hidden = 16
depth = 2
[train]
optimizers = ["gn", "sgd", "adam"]
steps = 12
batch_size = 16
checkpoints = 4
[optimizers.gn]
lr = {gn_lr}
"""


def test_run_trains_the_others_and_reports_the_failed_run(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(TOML.format(gn_lr=1e6))
    out = tmp_path / "exp"
    assert main(["run", "--config", str(config), "--out", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out / "report.html")
    assert "gn.zarr failed: Diverged: optimizer 'gn' diverged at step" in captured.err
    assert "1 of 3 runs failed" in captured.err and "Traceback" not in captured.err
    status = {name: dynamics.open_run(out / f"{name}.zarr").attrs["status"] for name in ("gn", "sgd", "adam")}
    assert status == {"gn": "failed", "sgd": "complete", "adam": "complete"}
    page = (out / "report.html").read_text()
    assert "1 run(s) failed" in page and "FAILED" in page and "diverged at step" in page
    # --resume retries the failed run (it fails again) and leaves the complete ones as they were
    assert main(["run", "--config", str(config), "--out", str(out), "--quiet", "--resume"]) == 1
    assert json.loads(dynamics.open_run(out / "sgd.zarr").attrs["config"])["optimizer"] == "sgd"


def test_run_with_a_config_error_still_stops_at_once(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(TOML.format(gn_lr=1e6).replace('optimizers = ["gn", "sgd", "adam"]',
                                                     'optimizers = ["gn", "nadam-x"]'))
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "exp"), "--quiet"]) == 2
    assert "nadam-x" in capsys.readouterr().err


# ----------------------------------------------------------------------------- unusable resume state
def _damage_state(path, how):
    state = path / "resume" / "state.pt"
    if how == "truncated":
        state.write_bytes(state.read_bytes()[:1000])
    elif how == "zeroed":
        state.write_bytes(bytes(len(state.read_bytes())))
    elif how == "foreign":           # a valid torch file of something else
        torch.save({"weights": torch.zeros(3)}, state)
    elif how == "other-model":       # a state of the right form, for another model's shapes
        saved = torch.load(state, weights_only=True)
        saved["model"] = {k: torch.zeros(2) for k in saved["model"]}
        torch.save(saved, state)
    return state


def _interrupt_at(step):
    def callback(current):
        if current == step:
            raise KeyboardInterrupt
    return callback


@pytest.mark.parametrize("how", ["truncated", "zeroed", "foreign", "other-model"])
def test_resume_with_unusable_state_keeps_status_and_names_the_file(tmp_path, tiny, how):
    config = tiny()
    path = tmp_path / "run.zarr"
    with pytest.raises(KeyboardInterrupt):
        train(config, "adam", path, progress=False, callback=_interrupt_at(6))
    before = dynamics.open_run(path)["metrics"].to_dataset().load()
    state = _damage_state(path, how)
    with pytest.raises(dynamics.errors.StoreError, match=f"cannot resume .*resume state {state} is unusable") as info:
        train(config, "adam", path, resume=True, progress=False)
    assert "\n" not in str(info.value) and "stays 'interrupted'" in str(info.value)
    tree = dynamics.open_run(path)
    assert tree.attrs["status"] == "interrupted" and not (path / ".lock").exists()
    assert tree["metrics"].to_dataset().load().identical(before)


@pytest.mark.parametrize("how", ["truncated", "foreign"])
def test_resume_of_complete_store_with_unusable_state_does_nothing(tmp_path, tiny, how):
    config = tiny()
    path = train(config, "adam", tmp_path / "run.zarr", progress=False)
    _damage_state(path, how)
    files = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    assert train(config, "adam", path, resume=True, progress=False) == path
    assert dynamics.open_run(path).attrs["status"] == "complete"
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()} == files
