"""A realistic synthetic analysis Dataset with exactly the variables of docs/DESIGN.md §6 "Analysis".

The numbers imitate what the paper reports: exact GN fits each mini-batch (own-batch loss change
near -60 %) while other batches barely move (transfer near 0), its NTK and representations stay
close to initialisation (lazy regime) and it generalises worse than SGD/Adam.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

LAYERS = ["blocks__0", "blocks__1", "blocks__2", "blocks__3"]
PARAMS = [f"blocks__{b}__{f}__linear__{k}" for b in range(4) for f in "FG" for k in ("weight", "bias")]

# optimiser -> (own %, other %, final test acc, laziness in [0, 1]: 1 = NTK/representations frozen)
PROFILES = {
    "gn": (-62.0, -1.5, 0.56, 0.97),
    "kgn": (-55.0, -2.0, 0.58, 0.95),
    "sgd": (-3.0, -2.2, 0.71, 0.55),
    "adam": (-5.0, -3.6, 0.76, 0.40),
}
CONFIG = {"model": {"name": "revmlp", "dim": 40, "hidden": 64, "depth": 4}, "data": {"name": "mnist1d"},
          "schedule": {"checkpoints": 12}, "note": "<b>unescaped?</b> & 'quotes'"}
VERSIONS = {"python": "3.11", "torch": "2.13.0", "dynamics": "0.1.0"}


def checkpoint_steps(n_steps: int) -> np.ndarray:
    """0 plus roughly log-spaced steps up to the last step."""
    grid = np.unique(np.concatenate([[0], np.round(np.geomspace(1, n_steps - 1, 11))]).astype(np.int64))
    return grid


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, x[0]), x])
    return np.convolve(padded, kernel, mode="valid")


def one_run(optimizer: str, seed: int, n_steps: int, rng: np.random.Generator) -> xr.Dataset:
    own_mean, other_mean, test_final, lazy = PROFILES.get(optimizer, (-10.0, -5.0, 0.65, 0.6))
    steps = np.arange(n_steps, dtype=np.int64)
    cks = checkpoint_steps(n_steps)
    t = np.log1p(cks) / np.log1p(cks[-1])  # 0 .. 1 over the run
    speed = 3.0 if optimizer in ("gn", "kgn") else 1.0
    train_loss = 2.3 * np.exp(-speed * 3 * t) + 0.02 * rng.random(t.size)
    train_acc = np.clip(0.1 + 0.9 * (1 - np.exp(-speed * 3 * t)), 0, 1)
    test_acc = 0.1 + (test_final - 0.1) * (1 - np.exp(-4 * t)) + 0.005 * rng.standard_normal(t.size)
    test_loss = 2.3 - (2.3 - 1.2) * (1 - np.exp(-4 * t)) + (0.8 * t**2 if optimizer in ("gn", "kgn") else 0)
    drift = 1 - lazy
    align = 1 - drift * (1 - np.exp(-3 * t)) * 0.8
    velocity = np.concatenate([[np.nan], np.abs(np.diff(align)) + 1e-4 * rng.random(t.size - 1)])
    own = own_mean * (1 + 0.3 * rng.standard_normal(n_steps)) * (1 - 0.5 * steps / n_steps)
    other = other_mean * (1 + 0.8 * rng.standard_normal(n_steps))
    loss = 2.3 * np.exp(-speed * 3 * np.log1p(steps) / np.log1p(n_steps)) + 0.05 * rng.random(n_steps)
    residual = (10 ** rng.normal(-13, 0.4, n_steps) if optimizer in ("gn", "kgn")
                else np.full(n_steps, np.nan))
    depth = np.arange(1, len(LAYERS) + 1) / len(LAYERS)
    cka = 1 - drift * np.outer(1 - np.exp(-3 * t), depth) * 0.7
    rep_rank = 30 - 12 * drift * np.outer(t, depth) + rng.random((t.size, len(LAYERS)))
    probe = 0.3 + np.outer(1 - np.exp(-3 * t), 0.2 + 0.6 * (1 - lazy) * depth) + 0.1 * depth
    wchange = np.outer(np.sqrt(t), 0.05 + 0.5 * drift * (1 + rng.random(len(PARAMS))))
    init_norm = np.array([0.05 if name.endswith("bias") else 8.0 for name in PARAMS]) * (1 + rng.random(len(PARAMS)))
    window = 20
    ds = xr.Dataset(
        {
            "train_loss": ("checkpoint", train_loss), "train_acc": ("checkpoint", train_acc),
            "test_loss": ("checkpoint", test_loss), "test_acc": ("checkpoint", np.clip(test_acc, 0, 1)),
            "ntk_alignment_init": ("checkpoint", align), "ntk_velocity": ("checkpoint", velocity),
            "ntk_target_alignment": ("checkpoint", 0.1 + 0.3 * drift * t),
            "ntk_effective_rank": ("checkpoint", 40 - 15 * drift * t),
            "cka_init": (("checkpoint", "layer"), cka),
            "rep_effective_rank": (("checkpoint", "layer"), rep_rank),
            "probe_accuracy": (("checkpoint", "layer"), np.clip(probe, 0, 1)),
            "weight_rel_change": (("checkpoint", "param"), wchange),
            "weight_cosine_init": (("checkpoint", "param"), 1 - 0.5 * wchange**2),
            "weight_delta_norm": (("checkpoint", "param"), wchange * init_norm),
            "weight_init_norm": ("param", init_norm),
            "param_ndim": ("param", np.array([1 if name.endswith("bias") else 2 for name in PARAMS])),
            "loss": ("step", loss), "gn_residual": ("step", residual),
            "own_change": ("step", own), "other_change": ("step", other),
            "transfer": ("step", other / own),
            "own_change_smooth": ("step", moving_average(own, window)),
            "other_change_smooth": ("step", moving_average(other, window)),
            "transfer_smooth": ("step", moving_average(other / own, window)),
        },
        coords={
            "checkpoint": np.arange(cks.size), "checkpoint_step": ("checkpoint", cks),
            "checkpoint_epoch": ("checkpoint", cks // 100),
            "step": steps, "epoch": ("step", steps // 100), "layer": LAYERS, "param": PARAMS,
        },
        attrs={"config": json.dumps(CONFIG), "optimizer": optimizer, "seed": seed},
    )
    return ds


def make_analysis(optimizers=("gn", "sgd", "adam"), seeds=(0,), n_steps=400, rng_seed=0) -> xr.Dataset:
    """Combined analysis Dataset (dims run, checkpoint, step, layer, param, run_) with ``cka_between``."""
    rng = np.random.default_rng(rng_seed)
    runs, labels, opts, seed_list = [], [], [], []
    for opt in optimizers:
        for seed in seeds:
            runs.append(one_run(opt, seed, n_steps, rng))
            labels.append(opt if len(seeds) == 1 else f"{opt}-seed{seed}")
            opts.append(opt)
            seed_list.append(seed)
    ds = xr.concat([r.drop_attrs() for r in runs], dim="run", coords="minimal", compat="override")
    ds = ds.assign_coords(run=labels, optimizer=("run", opts), seed=("run", seed_list), label=("run", labels))
    n, c, L = len(runs), ds.sizes["checkpoint"], len(LAYERS)
    lazy = np.array([PROFILES.get(o, (0, 0, 0, 0.6))[3] for o in opts])
    t = np.linspace(0, 1, c)
    between = np.ones((n, n, c, L))
    for i in range(n):
        for j in range(n):
            if i != j:
                gap = abs(lazy[i] - lazy[j]) + 0.1
                between[i, j] = 1 - np.outer(t, np.linspace(0.3, 1, L)) * gap
    ds["cka_between"] = (("run", "run_", "checkpoint", "layer"), between)
    ds = ds.assign_coords(run_=labels)
    ds.attrs = {"config": json.dumps(CONFIG)}
    return ds
