"""Config and command-line user errors: one line on stderr, exit status 2, nothing written (issue 15 §3,
issue 14 case 8: names that would become paths outside the experiment folder)."""

import json

import pytest

import dynamics
from dynamics.cli import main

TINY = """preset = "digits"
name = "tiny"
[data]
n_train = 160
n_test = 60
probe_size = 12
[model]
hidden = 24
depth = 2
[train]
optimizers = ["adam"]
steps = 3
batch_size = 16
checkpoints = 2
eval_size = 20
ntk = false
"""


def one_line(capsys, *pieces):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for piece in pieces:
        assert piece in err, err
    return err


def config_file(tmp_path, extra="", name="c.toml"):
    path = tmp_path / name
    path.write_text(TINY + extra)
    return path


def exits_2(argv):
    try:
        return main(argv)
    except SystemExit as exit_info:  # argparse errors
        return exit_info.code


@pytest.mark.parametrize("table, pieces", [
    ('[optimizers.adam]\nbetas = []\n', ["optimizers.adam.betas", "too few items"]),
    ('[optimizers.adam]\nbetas = [0.9]\n', ["optimizers.adam.betas", "item 1 is missing"]),
    ('[optimizers.adam]\nbetas = [0.9, 0.99, 0.5]\n', ["optimizers.adam.betas"]),
    ('[optimizers.adam]\nbetas = [0.9, 1.5]\n', ["optimizers.adam.betas[1] = 1.5 must be < 1.0"]),
    ('[optimizers.w]\nkind = "AdamW"\nbetas = [0.9]\n', ["optimizers.w.betas"]),
    ('[optimizers.adam]\nkind = "LBFGS"\n', ["optimizers.adam", "LBFGS cannot be used", "closure"]),
    ('[optimizers.adam]\nkind = "lbfgs"\n', ["LBFGS cannot be used"]),
    ('[optimizers.adam]\nkind = "SparseAdam"\n', ["SparseAdam cannot be used", "sparse gradients"]),
    ('[optimizers.adam]\ndifferentiable = true\n', ["optimizers.adam.differentiable is not supported"]),
    ('[optimizers.adam]\nkind = "AdamW"\ndifferentiable = true\n', ["optimizers.adam.differentiable"]),
    ('[optimizers.adam]\nfused = true\n', ["optimizers.adam.fused is not supported"]),
    ("model.depth=1000000", ["model.depth = 1000000 must be <= 1000"]),
    ("train.seed=18446744073709551617", ["train.seed = 18446744073709551617 must be <= 9223372036854775807"]),
    ("data.split_seed=9223372036854775808", ["data.split_seed"]),
])
def test_bad_config_values_are_one_line(tmp_path, capsys, table, pieces):
    out = tmp_path / "a.zarr"
    given = ["--config", str(config_file(tmp_path, table))] if table.startswith("[") else \
        ["--config", str(config_file(tmp_path)), "--set", table]
    assert exits_2(["train", "--optimizer", "adam", *given, "--out", str(out), "--quiet"]) == 2
    one_line(capsys, *pieces)
    assert not out.exists()


def test_config_file_that_is_not_utf8(tmp_path, capsys):
    for data in (b'name = "caf\xe9"\n', b"\xff\xfe[\x00m\x00", TINY.encode("utf-16")):
        path = tmp_path / "latin1.toml"
        path.write_bytes(data)
        assert exits_2(["config", "show", "--config", str(path)]) == 2
        one_line(capsys, "latin1.toml", "is not UTF-8")


def test_huge_hidden_is_refused_with_the_estimate(tmp_path, capsys):
    for key, value in (("model.hidden", "1000000000"), ("model.hidden", "300000000")):
        out = tmp_path / "h.zarr"
        assert exits_2(["train", "--optimizer", "adam", "--config", str(config_file(tmp_path)), "--set",
                        f"{key}={value}", "--out", str(out), "--quiet"]) == 2
        one_line(capsys, "GiB of memory", f"model.hidden = {value}", "available")
        assert not out.exists()


@pytest.mark.parametrize("argv, piece", [
    (["--seed", str(2**64 + 1)], "--seed must be in [0, 2**63 - 1]"),
    (["--seed", str(2**63)], "--seed must be in [0, 2**63 - 1]"),
    (["--seed", "-3"], "--seed must be in"),
    (["--seed", "1e3"], "--seed must be an integer"),
])
def test_seed_out_of_range(tmp_path, capsys, argv, piece):
    assert exits_2(["train", "--optimizer", "adam", "--config", str(config_file(tmp_path)), "--out",
                    str(tmp_path / "s.zarr"), *argv]) == 2
    one_line(capsys, piece)
    assert exits_2(["run", "--config", str(config_file(tmp_path)), "--out", str(tmp_path / "r"),
                    "--seeds", f"0,{2**64 + 1}"]) == 2
    one_line(capsys, "--seeds must list distinct integers in [0, 2**63 - 1]")


def test_out_naming_an_existing_file(tmp_path, capsys):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    assert exits_2(["train", "--optimizer", "adam", "--config", str(config_file(tmp_path)), "--out",
                    str(existing), "--quiet"]) == 2
    one_line(capsys, "notes.txt", "is an existing file")
    assert exits_2(["run", "--config", str(config_file(tmp_path)), "--out", str(existing), "--quiet"]) == 2
    one_line(capsys, "notes.txt", "is an existing file")
    assert exits_2(["train", "--optimizer", "adam", "--config", str(config_file(tmp_path)), "--out",
                    str(existing), "--overwrite", "--quiet"]) == 2
    one_line(capsys, "is an existing file")
    assert existing.read_text() == "keep me"


def test_rerun_names_resume_and_overwrite(tmp_path, capsys):
    config, out = config_file(tmp_path), tmp_path / "adam.zarr"
    argv = ["train", "--optimizer", "adam", "--config", str(config), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    one_line(capsys, "already exists", "--resume", "--overwrite")
    assert main([*argv, "--resume", "--overwrite"]) == 2
    one_line(capsys, "--resume and --overwrite exclude each other")
    assert main([*argv, "--overwrite", "--set", "train.seed=5"]) == 0
    tree = dynamics.open_run(out)
    assert tree.attrs["status"] == "complete" and json.loads(tree.attrs["config"])["seed"] == 5
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.txt").write_text("precious")
    assert main(["train", "--optimizer", "adam", "--config", str(config), "--out", str(foreign), "--overwrite",
                 "--quiet"]) == 2
    one_line(capsys, "foreign")
    assert (foreign / "data.txt").read_text() == "precious"


def test_mlp_with_kgn_and_adam_is_valid_and_gn_is_refused_only_when_it_runs(tmp_path, capsys):
    from trainers.config import load_config

    config = load_config(path=config_file(tmp_path), overrides={"model.kind": "mlp",
                                                                "train.optimizers": ["kgn", "adam"]})
    assert config.optimizers["gn"].kind == "gn" and config.train.optimizers == ["kgn", "adam"]
    assert exits_2(["train", "--optimizer", "gn", "--config", str(config_file(tmp_path)), "--set", "model.kind=mlp",
                    "--set", 'train.optimizers=["kgn"]', "--out", str(tmp_path / "g.zarr"), "--quiet"]) == 2
    one_line(capsys, "optimizer 'gn' needs model.kind = 'revmlp'")
    assert exits_2(["run", "--config", str(config_file(tmp_path)), "--set", "model.kind=mlp",
                    "--out", str(tmp_path / "r"), "--quiet", "--set", 'train.optimizers=["gn", "adam"]']) == 2
    one_line(capsys, "optimizers.gn")
    assert not (tmp_path / "r").exists()


def test_run_takes_set_and_refuses_bad_keys(tmp_path, capsys):
    assert exits_2(["run", "--config", str(config_file(tmp_path)), "--set", "train.stepz=3",
                    "--out", str(tmp_path / "r")]) == 2
    one_line(capsys, "unknown config key train.stepz")
    assert exits_2(["run", "--config", str(config_file(tmp_path)), "--set", "no-equals-sign"]) == 2
    one_line(capsys, "--set needs dotted.key=value")


@pytest.mark.parametrize("command", [["run"], ["train"], ["analyze"], ["report"], ["compare"], ["config"],
                                     ["config", "show"], ["sweep"], ["unlock"]])
def test_every_subcommand_help_says_what_inputs_outputs(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "inputs:" in text and "outputs:" in text
    assert "presets: digits, mnist1d, mnist5k, paper-cifar, paper-mnist" in text


# issue 14 case 8: user names never become paths outside the chosen folder
@pytest.mark.parametrize("extra, pieces", [
    ('[optimizers."../escaped"]\nkind = "adam"\n', ["optimizers.../escaped", "is not a valid name"]),
    ('[optimizers."a/b"]\nkind = "adam"\n', ["'a/b' is not a valid name"]),
    ('[optimizers."x.y"]\nkind = "adam"\n', ["'x.y' is not a valid name"]),
    ('[optimizers.' + "a" * 300 + ']\nkind = "adam"\n', ["is not a valid name", "1-64 letters"]),
])
def test_optimizer_table_names_must_be_safe(tmp_path, capsys, extra, pieces):
    out = tmp_path / "exp" / "inner"
    assert exits_2(["run", "--config", str(config_file(tmp_path, extra)), "--out", str(out), "--quiet"]) == 2
    one_line(capsys, *pieces)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


@pytest.mark.parametrize("name", ["../../x", "/abs", "..", ".hidden", "a" * 65, "tab\tname", ""])
def test_experiment_name_must_be_safe(tmp_path, capsys, monkeypatch, name):
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    path = config_file(tmp_path, name="n.toml")
    path.write_text(TINY.replace('name = "tiny"', f"name = {json.dumps(name)}"))
    assert exits_2(["run", "--config", str(path), "--quiet"]) == 2
    one_line(capsys, "config key name")
    assert list(work.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["n.toml", "work"]


@pytest.mark.parametrize("optimizer", ["a" * 300, "../x", "x/../../y", "-rf"])
def test_optimizer_argument_must_be_safe(tmp_path, capsys, optimizer):
    out = tmp_path / "o.zarr"
    assert exits_2(["train", f"--optimizer={optimizer}", "--config", str(config_file(tmp_path)), "--out", str(out),
                    "--quiet"]) == 2
    one_line(capsys, "is not a valid name")
    assert not out.exists()
    assert exits_2(["config", "show", "--config", str(config_file(tmp_path)), "--set",
                    f"train.optimizers=[{json.dumps(optimizer)}]"]) == 2
    one_line(capsys, "train.optimizers", "is not a valid name")
