"""The `dynamics` command line end to end on a tiny config, its user errors and Ctrl-C."""

import json
import signal
import subprocess
import sys
import time

import pytest

import dynamics
from dynamics.cli import main

TINY = """preset = "digits"
name = "tiny"
[data]
n_train = 160
n_test = 60
probe_size = 64
[model]
hidden = 24
depth = 2
[train]
optimizers = ["gn", "adam"]
steps = {steps}
batch_size = 16
checkpoints = 4
"""


@pytest.fixture
def tiny_file(tmp_path):
    def write(steps=10):
        path = tmp_path / f"tiny{steps}.toml"
        path.write_text(TINY.format(steps=steps))
        return path
    return write


def status(path):
    return dynamics.open_run(path).attrs["status"]


def test_help_lists_commands_and_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("run", "train", "analyze", "report", "compare", "examples:", "--resume"):
        assert word in text


def test_train_writes_one_store(tmp_path, tiny_file, capsys):
    out = tmp_path / "adam.zarr"
    assert main(["train", "--optimizer", "adam", "--config", str(tiny_file()), "--out", str(out),
                 "--seed", "4", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    tree = dynamics.open_run(out)
    config = json.loads(tree.attrs["config"])
    assert tree.attrs["status"] == "complete" and config["seed"] == 4 and config["optimizer"] == "adam"
    assert config["name"] == "tiny" and config["model"]["hidden"] == 24
    assert tree["metrics"].sizes["step"] == 10


def test_run_trains_analyses_and_reports(tmp_path, tiny_file, capsys, monkeypatch):
    out = tmp_path / "exp"
    config = tiny_file()
    config.write_text(config.read_text().replace('optimizers = ["gn", "adam"]', 'optimizers = ["adam"]'))
    import trainers.data

    reads, read_raw = [], trainers.data.read_raw
    monkeypatch.setattr(trainers.data, "read_raw", lambda *a, **k: reads.append(a) or read_raw(*a, **k))
    assert main(["run", "--config", str(config), "--out", str(out), "--seeds", "0,1", "--quiet"]) == 0
    assert len(reads) == 1   # the data set is read once and shared by both runs
    monkeypatch.undo()
    report = out / "report.html"
    assert capsys.readouterr().out.strip() == str(report)
    assert report.is_file() and (out / "analysis.zarr").is_dir()
    stores = sorted(p.name for p in out.glob("*-seed*.zarr"))
    assert stores == ["adam-seed0.zarr", "adam-seed1.zarr"]
    assert all(status(out / s) == "complete" for s in stores)
    # running again without --resume refuses to overwrite; with --resume it is a no-op that succeeds
    assert main(["run", "--config", str(config), "--out", str(out), "--seeds", "0,1", "--quiet"]) == 2
    one_line_error(capsys, "adam-seed0.zarr")
    assert main(["run", "--config", str(config), "--out", str(out), "--seeds", "0,1", "--quiet",
                 "--resume"]) == 0
    assert main(["analyze", str(out)]) == 0
    assert main(["report", str(out)]) == 0
    capsys.readouterr()
    assert main(["compare", str(out), "--out", str(tmp_path / "cmp.html")]) == 2   # one folder: nothing to compare
    one_line_error(capsys, "at least two experiment folders", "dynamics report")
    assert not (tmp_path / "cmp.html").exists()


def one_line_error(capsys, *pieces):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for piece in pieces:
        assert piece in err, err


def test_user_errors_exit_2_with_one_line(tmp_path, tiny_file, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nwidth = 3\n')
    assert main(["train", "--optimizer", "sgd", "--config", str(bad), "--out", str(tmp_path / "a.zarr")]) == 2
    one_line_error(capsys, "model.width")
    assert main(["run", "--preset", "paper-mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    one_line_error(capsys, "train-images-idx3-ubyte", str(tmp_path))
    foreign = tmp_path / "foreign.zarr"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a store")
    assert main(["train", "--optimizer", "sgd", "--config", str(tiny_file()), "--out", str(foreign),
                 "--resume", "--quiet"]) == 2
    one_line_error(capsys, "foreign.zarr")
    assert main(["train", "--optimizer", "nadam-x", "--config", str(tiny_file()), "--out", str(tmp_path / "b")]) == 2
    one_line_error(capsys, "unknown optimizer 'nadam-x'")
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    one_line_error(capsys, "nowhere")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--seeds", "0,x"])
    assert exit_info.value.code == 2


def test_ctrl_c_exits_130_and_resume_completes(tmp_path, tiny_file):
    config = tiny_file(steps=300)
    out = tmp_path / "sgd.zarr"
    command = [sys.executable, "-m", "dynamics.cli", "train", "--optimizer", "adam", "--config", str(config),
               "--out", str(out), "--quiet"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "resume" / "state.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert status(out) == "interrupted"
    steps_done = dynamics.open_run(out)["metrics"].sizes["step"]
    assert steps_done < 300
    assert main(["train", "--optimizer", "adam", "--config", str(config), "--out", str(out), "--resume",
                 "--quiet"]) == 0
    tree = dynamics.open_run(out)
    assert tree.attrs["status"] == "complete" and tree["metrics"].sizes["step"] == 300


def test_config_show_prints_the_resolved_config_as_toml(tmp_path, tiny_file, capsys):
    import tomllib

    from trainers.config import load_config

    assert main(["config", "show", "--config", str(tiny_file()), "--set", "optimizers.gn.lr=0.25",
                 "--set", "model.activation=tanh", "--set", 'train.optimizers=["gn", "adamw"]']) == 0
    shown = tomllib.loads(capsys.readouterr().out)
    assert shown["name"] == "tiny" and shown["preset"] == "digits" and shown["model"]["hidden"] == 24
    assert shown["optimizers"]["gn"]["lr"] == 0.25 and shown["model"]["activation"] == "tanh"
    assert shown["optimizers"]["adamw"]["kind"] == "AdamW" and shown["optimizers"]["adamw"]["betas"] == [0.9, 0.999]
    path = tmp_path / "shown.toml"
    main(["config", "show", "--preset", "digits"])
    path.write_text(capsys.readouterr().out)
    assert load_config(path=path) == load_config("digits")
    assert main(["config", "show", "--set", "model.hidden=0"]) == 2
    one_line_error(capsys, "model.hidden = 0 must be >= 1")
    assert main(["config", "show", "--set", "optimizers.adam.betas=[0.9]"]) == 2
    one_line_error(capsys, "optimizers.adam.betas")


def test_train_with_set_overrides(tmp_path, tiny_file, capsys):
    out = tmp_path / "k.zarr"
    assert main(["train", "--optimizer", "kgn", "--config", str(tiny_file()), "--set", "optimizers.kgn.lr=0.1",
                 "--set", "train.steps=3", "--out", str(out), "--quiet"]) == 0
    config = json.loads(dynamics.open_run(out).attrs["config"])
    assert config["optimizer_options"]["lr"] == 0.1 and config["optimizer_options"]["kind"] == "kgn"
    assert config["optimizers"]["kgn"]["lr"] == 0.1 and config["train"]["steps"] == 3
    assert main(["train", "--optimizer", "adam", "--config", str(tiny_file()), "--set", "train.bogus=1",
                 "--out", str(tmp_path / "x.zarr"), "--quiet"]) == 2
    one_line_error(capsys, "unknown config key train.bogus")
    assert not (tmp_path / "x.zarr").exists()
