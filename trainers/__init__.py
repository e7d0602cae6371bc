"""Trainers: training loops with exact Gauss–Newton and first-order baselines, data sets, presets.

- :func:`trainers.config.load_config` — a preset (TOML data in ``trainers/presets``) overridden by a
  user's TOML and dotted overrides, validated into a typed :class:`ExperimentConfig`;
- :func:`train` — one optimiser, one seed → one run store (DESIGN §4), resumable;
- :func:`store_name` — the store's file name in an experiment folder.
"""

from trainers.config import ExperimentConfig, load_config
from trainers.loop import store_name, train

__all__ = ["ExperimentConfig", "load_config", "train", "store_name"]
