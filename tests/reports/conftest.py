"""Fixtures: realistic synthetic analysis Datasets following docs/DESIGN.md §6."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import make_analysis  # noqa: E402


@pytest.fixture(scope="session")
def analysis_ds():
    """GN, SGD and Adam, one seed each, 400 steps, 12 checkpoints, 4 layers, 16 parameters."""
    return make_analysis()


@pytest.fixture(scope="session")
def analysis_seeds():
    """GN and Adam with two seeds each."""
    return make_analysis(optimizers=("gn", "adam"), seeds=(0, 1), n_steps=200)
