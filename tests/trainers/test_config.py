"""Presets, user overrides, dotted overrides, the typed config and validation errors that name the key."""

import json
import tomllib
from pathlib import Path

import pytest

from dynamics.errors import ConfigError
from trainers.config import ExperimentConfig, json_schema, load_config, merge, preset_names, validate
from trainers.config_toml import config_to_toml

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "config-schema.json"


def write(tmp_path, text, name="user.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_preset_loads_and_validates():
    assert {"mnist1d", "digits", "mnist5k", "paper-mnist", "paper-cifar"} <= set(preset_names())
    for name in preset_names():
        config = load_config(name)
        assert isinstance(config, ExperimentConfig)
        assert config.preset == name and config.name == name
        assert set(config.train.optimizers) <= set(config.optimizers)


def test_paper_presets_have_published_sizes():
    mnist, cifar = load_config("paper-mnist"), load_config("paper-cifar")
    # docs/paper-protocol: batch 1024
    assert (mnist.data.name, mnist.model.hidden, mnist.model.depth, mnist.train.batch_size) == ("mnist", 8000, 2, 1024)
    assert (cifar.data.name, cifar.model.depth, cifar.train.batch_size) == ("cifar10", 6, 1024)


def test_default_is_mnist1d_with_gn_sgd_adam():
    config = load_config()
    assert config.preset == "mnist1d" and config.data.name == "mnist1d"
    assert config.train.optimizers == ["gn", "sgd", "adam"]
    # GN α 0.1: the largest α stable over the default run in the protocol study (docs/protocol-study.md)
    assert config.optimizers["gn"].kind == "gn" and config.optimizers["gn"].lr == 0.1


def test_user_file_overrides_preset(tmp_path):
    path = write(tmp_path, 'preset = "digits"\nname = "mine"\n[model]\nhidden = 12\n'
                           '[optimizers.gn]\nlr = 0.5\n[optimizers.fast]\nkind = "AdamW"\nlr = 1e-2\n'
                           'betas = [0.8, 0.9]\n[train]\noptimizers = ["gn", "fast"]\n')
    config = load_config(path=path)
    base = load_config("digits")
    assert config.preset == "digits" and config.name == "mine"
    assert config.model.hidden == 12 and config.model.depth == base.model.depth
    assert config.optimizers["gn"].lr == 0.5
    fast = config.optimizers["fast"]
    assert (fast.kind, fast.lr, fast.betas, fast.weight_decay) == ("AdamW", 1e-2, (0.8, 0.9), 0.01)
    assert config.to_dict()["optimizers"]["fast"]["betas"] == [0.8, 0.9]
    assert config.train.optimizers == ["gn", "fast"]
    assert load_config("digits", path).model.hidden == 12
    with pytest.raises(ConfigError, match="contradicts the requested preset 'mnist1d'"):
        load_config("mnist1d", path)


def test_dotted_overrides_apply_last_and_are_validated(tmp_path):
    path = write(tmp_path, 'preset = "digits"\n[optimizers.gn]\nlr = 0.5\n')
    config = load_config(path=path, overrides={"optimizers.gn.lr": 0.3, "train.seed": 7, "model.hidden": 16,
                                               "optimizers.extra.kind": "rmsprop"})
    assert (config.optimizers["gn"].lr, config.train.seed, config.model.hidden) == (0.3, 7, 16)
    assert config.optimizers["extra"].kind == "RMSprop"
    again = config.with_overrides({"train.seed": 8})
    assert again.train.seed == 8 and config.train.seed == 7 and again.model.hidden == 16
    for key, value, message in [("model.width", 3, r"unknown config key model\.width"),
                                ("optimizers.gn.lr", -1.0, r"optimizers\.gn\.lr = -1\.0 must be > 0"),
                                ("train.seed", "x", r"train\.seed must be of type int"),
                                ("model.hidden.x", 1, r"override key model\.hidden\.x: config key model\.hidden "
                                                      r"is not a table"),
                                ("model..hidden", 1, r"override key 'model\.\.hidden' must be a dotted"),
                                ("preset", "digits", r"override key preset cannot be set")]:
        with pytest.raises(ConfigError, match=message):
            load_config("digits", overrides={key: value})


def test_int_is_accepted_for_float_but_nothing_else_is_converted():
    config = validate(merge(load_config().to_dict(), {"data": {"test_fraction": 0.5}, "optimizers": {"sgd": {"lr": 1}}}))
    assert config.optimizers["sgd"].lr == 1 and isinstance(config.optimizers["sgd"].lr, float)
    with pytest.raises(ConfigError, match=r"train\.epochs must be of type int, got '3' \(str\)"):
        load_config(overrides={"train.epochs": "3"})


def test_missing_keys_take_their_documented_defaults():
    raw = load_config().to_dict()
    del raw["train"]["seed"], raw["optimizers"]["adam"]["betas"]
    config = validate(raw)
    schema = json_schema()
    assert config.train.seed == schema["$defs"]["TrainConfig"]["properties"]["seed"]["default"] == 0
    assert config.optimizers["adam"].betas == (0.9, 0.999)
    assert ExperimentConfig().model.hidden == 1024


def test_config_is_frozen_and_to_dict_round_trips():
    config = load_config("digits", overrides={"optimizers.fancy.kind": "AdamW", "train.optimizers": ["gn", "fancy"]})
    with pytest.raises(Exception):
        config.model.hidden = 3
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"name", "preset", "data", "model", "train", "optimizers"}
    assert validate(data) == config


def test_toml_output_reads_back_to_the_same_config(tmp_path):
    for name in preset_names():
        config = load_config(name, overrides={"optimizers.w.kind": "AdamW", "data.data_dir": 'C:\\data "x"'})
        text = config_to_toml(config)
        tomllib.loads(text)
        assert load_config(path=write(tmp_path, text)) == config


def test_json_schema_in_docs_is_current():
    """docs/config-schema.json is generated; regenerate with `make schema` when this fails."""
    expected = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    assert SCHEMA_FILE.read_text(encoding="utf-8") == expected, "docs/config-schema.json is stale: run `make schema`"


def test_every_key_has_a_description():
    schema = json_schema()
    models = [*schema["$defs"].values(), schema, *schema["optimizer_kinds"].values()]
    for model in models:
        for key, spec in model.get("properties", {}).items():
            assert spec.get("description"), (model.get("title"), key)


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
    ("[train]\noptimizers = []\n", r"train\.optimizers = \[\] has 0 item\(s\)"),
    ("[train]\noptimizers = [\"sgd\", \"sgd\"]\n", r"train\.optimizers lists a name twice"),
    ("[train]\noptimizers = [\"lbfgs-ish\"]\n", r"unknown optimizer 'lbfgs-ish'"),
    ("model = 3\n", r"config key model must be a table"),
    ("optimizers = 3\n", r"config key optimizers must be a table of tables"),
    ("[optimizers]\nadam = 3\n", r"config key optimizers\.adam must be a table"),
    ("[optimizers.adam]\nmomentum = 0.9\n", r"unknown config key optimizers\.adam\.momentum; allowed keys here: "
                                            r"\['amsgrad', 'betas'"),
    ("[optimizers.adam]\nlr = \"fast\"\n", r"optimizers\.adam\.lr must be of type float, got 'fast' \(str\)"),
    ("[optimizers.sgd]\nlr = -1.0\n", r"optimizers\.sgd\.lr = -1\.0 must be > 0"),
    ("[optimizers.gn]\ndamping = 1.0\n", r"unknown config key optimizers\.gn\.damping; allowed keys here"),
    ("[optimizers.gn]\nlr = 0.1\nkind = \"nope\"\n", r"optimizers\.gn: unknown optimizer 'nope'"),
    ("[optimizers.gn]\ncombine = \"avg\"\n", r"optimizers\.gn\.combine = 'avg' is not allowed; choose one of "
                                             r"\['exact', 'sum'\]"),
    ("[optimizers.w]\nkind = \"AdamW\"\nweight_decay = \"x\"\n", r"optimizers\.w\.weight_decay must be of type float"),
    ("[optimizers.w]\nkind = \"AdamW\"\nnope = 1\n", r"unknown config key optimizers\.w\.nope; allowed keys here: "
                                                     r"\['amsgrad'"),
    ("[model]\nkind = \"mlp\"\n", r"optimizers\.gn: optimizer 'gn' needs model\.kind = 'revmlp'"),
    ("[train\n", r"user\.toml' is not valid TOML"),
])
def test_bad_values_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(path=write(tmp_path, text))


@pytest.mark.parametrize("spelling, kind", [("adamw", "AdamW"), ("ADAMW", "AdamW"), ("Adam", "adam"),
                                            ("SGD", "sgd"), ("rmsprop", "RMSprop"), ("KGN", "kgn")])
def test_optimizer_kinds_are_case_insensitive(spelling, kind):
    config = load_config("digits", overrides={"optimizers.x.kind": spelling, "train.optimizers": ["x"]})
    assert config.optimizers["x"].kind == kind
    assert load_config("digits", overrides={"train.optimizers": [spelling]}).optimizer(spelling).kind == kind


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'; choose one of \[.*'mnist1d'"):
        load_config("nope")
    with pytest.raises(ConfigError, match="config file '.*missing.toml' does not exist"):
        load_config(path=tmp_path / "missing.toml")


def test_optimizer_names_match_tables_ignoring_case():
    config = load_config("digits", overrides={"train.optimizers": ["GN", "Adam"], "optimizers.adam.lr": 0.02})
    assert config.train.optimizers == ["gn", "adam"] and config.optimizers["adam"].lr == 0.02
    assert config.optimizer("ADAM").lr == 0.02 and config.optimizer("AdamW").kind == "AdamW"
    with pytest.raises(ConfigError, match=r"optimizer 'gn' needs model\.kind = 'revmlp'"):
        config.with_overrides({"model.kind": "mlp"})
    mlp = config.with_overrides({"model.kind": "mlp", "train.optimizers": ["kgn", "adamw"]})
    assert mlp.optimizers["adamw"].kind == "AdamW"
    with pytest.raises(ConfigError, match=r"optimizer 'gn' needs model\.kind = 'revmlp'"):
        mlp.optimizer("GN")


def test_option_models_follow_the_class_signatures():
    """Every keyword argument of each class is a key of its model with the same default (GN lr: 0.1, the
    class has none), except torch's implementation switches, which are refused."""
    import inspect

    import torch

    from dynamics.gauss_newton import KernelGN, ReversibleGN
    from trainers.optimizer_options import UNSUPPORTED_KEYS, AdamOptions, GNOptions, KGNOptions, SGDOptions

    for cls, model in ((ReversibleGN, GNOptions), (KernelGN, KGNOptions), (torch.optim.SGD, SGDOptions),
                       (torch.optim.Adam, AdamOptions)):
        signature = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
                     if p.name not in ("self", "model", "params", "loss") and p.name not in UNSUPPORTED_KEYS}
        fields = {k: f.default for k, f in model.model_fields.items() if k != "kind"}
        assert set(signature) == set(fields), cls
        for key, default in signature.items():
            if default is not inspect.Parameter.empty:
                assert fields[key] == default, (cls, key)
        assert fields["lr"] > 0
