"""``dynamics sweep --set``: typed dotted overrides at every grid point (issue 15 §3), user errors one line."""

import json

import pytest

from dynamics.cli import main
from dynamics.errors import ConfigError
from trainers.sweep_plan import plan_sweep

SWEEP = """preset = "digits"
name = "tiny-sweep"
[data]
n_train = 160
n_test = 60
probe_size = 12
[model]
hidden = 24
depth = 2
[train]
optimizers = ["adam"]
steps = 4
batch_size = 16
checkpoints = 2
ntk = false
[sweep]
"optimizers.adam.lr" = [0.001, 0.01]
"""


def sweep_file(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    return path


def test_overrides_reach_every_point_and_win_over_the_file(tmp_path):
    plan = plan_sweep(sweep_file(tmp_path), {"train.steps": 2, "model.hidden": 8, "optimizers.adam.eps": 1e-6})
    assert len(plan.runs) == 2
    for spec in plan.runs.values():
        assert spec.config["train"]["steps"] == 2 and spec.config["model"]["hidden"] == 8
        assert spec.config["optimizers"]["adam"]["eps"] == 1e-6
    assert sorted(s.config["optimizers"]["adam"]["lr"] for s in plan.runs.values()) == [0.001, 0.01]
    assert plan.digest != plan_sweep(sweep_file(tmp_path)).digest   # the manifest sees the change


@pytest.mark.parametrize("overrides, pieces", [
    ({"train.stepz": 1}, ["unknown config key train.stepz"]),
    ({"train.steps": "many"}, ["config key train.steps must be of type int"]),
    ({"optimizers.adam.lr": 0.5}, ["--set optimizers.adam.lr is also a key of the [sweep] table"]),
])
def test_bad_overrides_name_the_key(tmp_path, overrides, pieces):
    with pytest.raises(ConfigError) as info:
        plan_sweep(sweep_file(tmp_path), overrides)
    for piece in pieces:
        assert piece in str(info.value)


@pytest.mark.parametrize("setting, piece", [("train.stepz=1", "unknown config key train.stepz"),
                                            ("model.hidden=0", "model.hidden = 0 must be >= 1"),
                                            ('optimizers.adam.lr=0.3', "also a key of the [sweep] table")])
def test_cli_sweep_set_errors_are_one_line(tmp_path, capsys, setting, piece):
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file(tmp_path)), "--set", setting, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and piece in err, err
    assert not (out / "sweep.json").exists()


@pytest.mark.slow
def test_cli_sweep_with_set_trains_the_overridden_config(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file(tmp_path)), "--set", "train.steps=2", "--out", str(out), "--workers", "1",
                 "--quiet"]) == 0
    manifest = json.loads((out / "sweep.json").read_text())
    assert all(run["status"] == "complete" for run in manifest["runs"].values())
    import dynamics
    for store in (out / "runs").glob("*.zarr"):
        assert json.loads(dynamics.open_run(store).attrs["config"])["train"]["steps"] == 2
