"""Presets, user overrides and validation errors that name the key."""

import pytest

from dynamics.errors import ConfigError
from trainers.config import load_config, merge, preset_names, validate


def write(tmp_path, text, name="user.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_preset_loads_and_validates():
    assert {"mnist1d", "digits", "mnist5k", "paper-mnist", "paper-cifar"} <= set(preset_names())
    for name in preset_names():
        config = load_config(name)
        assert config["preset"] == name and config["name"] == name
        assert set(config["train"]["optimizers"]) <= set(config["optimizers"])


def test_paper_presets_have_published_sizes():
    mnist, cifar = load_config("paper-mnist"), load_config("paper-cifar")
    assert (mnist["data"]["name"], mnist["model"]["hidden"], mnist["model"]["depth"],
            mnist["train"]["batch_size"]) == ("mnist", 8000, 2, 1000)
    assert (cifar["data"]["name"], cifar["model"]["depth"], cifar["train"]["batch_size"]) == ("cifar10", 6, 1024)


def test_default_is_mnist1d_with_gn_sgd_adam():
    config = load_config()
    assert config["preset"] == "mnist1d" and config["data"]["name"] == "mnist1d"
    assert config["train"]["optimizers"] == ["gn", "sgd", "adam"]
    assert config["optimizers"]["gn"]["kind"] == "gn"


def test_user_file_overrides_preset(tmp_path):
    path = write(tmp_path, 'preset = "digits"\nname = "mine"\n[model]\nhidden = 12\n'
                           '[optimizers.gn]\nlr = 0.5\n[optimizers.fast]\nkind = "AdamW"\nlr = 1e-2\n'
                           'betas = [0.8, 0.9]\n[train]\noptimizers = ["gn", "fast"]\n')
    config = load_config(path=path)
    base = load_config("digits")
    assert config["preset"] == "digits" and config["name"] == "mine"
    assert config["model"]["hidden"] == 12 and config["model"]["depth"] == base["model"]["depth"]
    assert config["optimizers"]["gn"]["lr"] == 0.5
    assert config["optimizers"]["fast"] == {"kind": "AdamW", "lr": 1e-2, "betas": [0.8, 0.9]}
    assert config["train"]["optimizers"] == ["gn", "fast"]
    assert load_config("digits", path)["model"]["hidden"] == 12
    with pytest.raises(ConfigError, match="contradicts the requested preset 'mnist1d'"):
        load_config("mnist1d", path)


def test_int_is_accepted_for_float():
    config = validate(merge(load_config(), {"data": {"test_fraction": 0.5}, "optimizers": {"sgd": {"lr": 1}}}))
    assert config["optimizers"]["sgd"]["lr"] == 1


@pytest.mark.parametrize("text, message", [
    ("[model]\nwidth = 3\n", r"unknown config key model\.width; allowed keys here: \['activation'"),
    ("bogus = 1\n", r"unknown config key bogus"),
    ("[model]\nhidden = 0\n", r"model\.hidden = 0 must be >= 1"),
    ("[model]\nhidden = 2.5\n", r"model\.hidden must be of type int, got 2\.5 \(float\)"),
    ("[model]\nhidden = true\n", r"model\.hidden must be of type int, got True \(bool\)"),
    ("[model]\nfirst_linear = 1\n", r"model\.first_linear must be of type bool"),
    ("[model]\nkind = \"cnn\"\n", r"model\.kind = 'cnn' is not allowed; choose one of \['revmlp', 'mlp'\]"),
    ("[data]\nname = \"imagenet\"\n", r"data\.name = 'imagenet' is not allowed"),
    ("[data]\ntest_fraction = 1.0\n", r"data\.test_fraction = 1\.0 must be < 1\.0"),
    ("[train]\nbatch_size = -4\n", r"train\.batch_size = -4 must be >= 1"),
    ("[train]\noptimizers = []\n", r"train\.optimizers must be a non-empty list"),
    ("[train]\noptimizers = [\"sgd\", \"sgd\"]\n", r"train\.optimizers lists a name twice"),
    ("[train]\noptimizers = [\"lbfgs-ish\"]\n", r"unknown optimizer 'lbfgs-ish'"),
    ("model = 3\n", r"config key model must be a table"),
    ("[optimizers.adam]\nmomentum = 0.9\n", r"unknown config key optimizers\.adam\.momentum; Adam accepts"),
    ("[optimizers.adam]\nlr = \"fast\"\n", r"optimizers\.adam\.lr must be like the default"),
    ("[optimizers.sgd]\nlr = -1.0\n", r"optimizers\.sgd\.lr must be > 0, got -1\.0"),
    ("[optimizers.gn]\ndamping = 1.0\n", r"unknown config key optimizers\.gn\.damping; ReversibleGN accepts"),
    ("[optimizers.gn]\nlr = 0.1\nkind = \"nope\"\n", r"optimizers\.gn: unknown optimizer 'nope'"),
    ("[model]\nkind = \"mlp\"\n", r"optimizers\.gn: optimizer 'gn' needs model\.kind = 'revmlp'"),
    ("[train\n", r"user\.toml' is not valid TOML"),
])
def test_bad_values_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(path=write(tmp_path, text))


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'; choose one of \[.*'mnist1d'"):
        load_config("nope")
    with pytest.raises(ConfigError, match="config file '.*missing.toml' does not exist"):
        load_config(path=tmp_path / "missing.toml")


def test_missing_section_key_is_reported():
    config = load_config()
    del config["train"]["seed"]
    with pytest.raises(ConfigError, match=r"section train lacks key\(s\) \['seed'\]"):
        validate(config)
