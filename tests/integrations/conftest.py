"""Fixtures of the integration tests: one tiny experiment folder (two real run stores) per session."""

import pytest

from tiny_runs import train_tiny


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory):
    """An experiment folder with ``sgd.zarr`` (12 steps) and ``adam.zarr`` (8 steps), 4 steps between
    checkpoints. Tests may add analyses to it (as ``dynamics report`` would), never change the runs."""
    folder = tmp_path_factory.mktemp("experiment")
    train_tiny(folder / "sgd.zarr", "sgd")
    train_tiny(folder / "adam.zarr", "adam", steps=8)
    return folder
