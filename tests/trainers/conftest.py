"""A tiny config (digits, small RevMLP, float64) that trains in well under a second per run."""

import pytest

from trainers.config import load_config, merge, validate


def tiny_config(**overrides):
    base = load_config("digits").to_dict()
    small = {
        "data": {"n_train": 160, "n_test": 60, "probe_size": 12},
        "model": {"hidden": 24, "depth": 2, "dtype": "float64"},
        "train": {"steps": 14, "batch_size": 16, "checkpoints": 5, "optimizers": ["gn", "sgd", "adam"]},
        "optimizers": {"gn": {"lr": 0.1}, "sgd": {"lr": 0.01}, "adam": {"lr": 1e-3}},
    }
    return validate(merge(merge(base, small), overrides))


@pytest.fixture
def tiny():
    return tiny_config
