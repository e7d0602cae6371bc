"""Experiment folders on disk for the write_report/compare tests: run stores (root attrs only, as
written by the store layer: schema, config JSON, versions JSON, status) plus ``analysis.zarr``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import zarr

from synthetic import VERSIONS


def write_store(path: Path, config: dict, status: str = "complete") -> Path:
    group = zarr.open_group(str(path), mode="w")
    group.attrs.update({"schema": "dynamics.run/1", "config": json.dumps(config),
                        "versions": json.dumps(VERSIONS), "status": status, "committed": {"step": 399}})
    return path


def make_experiment(root: Path, ds, configs: dict[str, dict] | None = None) -> Path:
    """One store per run label of ``ds`` (config from ``configs`` or ``ds.attrs['config']``), then analysis.zarr."""
    root.mkdir(parents=True, exist_ok=True)
    base = json.loads(ds.attrs["config"])
    for label, optimizer in zip(ds["label"].values, ds["optimizer"].values):
        config = (configs or {}).get(str(label), {**base, "optimizer": {"name": str(optimizer)}})
        write_store(root / f"{label}.zarr", config)
    past = time.time() - 60  # the stores were written before the analysis
    for dirpath, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(dirpath, name), (past, past))
    ds.to_zarr(root / "analysis.zarr", mode="w")
    return root
