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


@pytest.fixture(scope="session")
def written_report(tmp_path_factory, analysis_ds):
    """``reports.write_report`` on an experiment folder made from ``analysis_ds`` (stores + analysis.zarr)."""
    import reports
    from experiment_dirs import make_experiment

    return reports.write_report(make_experiment(tmp_path_factory.mktemp("written") / "demo", analysis_ds))
