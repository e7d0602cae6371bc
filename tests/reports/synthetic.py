"""A realistic synthetic analysis Dataset with exactly the variables of docs/DESIGN.md §6 "Analysis".

With ``diagnostics`` it also holds the NTK spectrum and the lazy-regime variables (linearised twin, sharpness),
as an analysis of runs trained with ``train.linearized`` and ``train.sharpness`` does.
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


def make_analysis(optimizers=("gn", "sgd", "adam"), seeds=(0,), n_steps=400, rng_seed=0,
                  diagnostics=True) -> xr.Dataset:
    """Combined analysis Dataset (dims run, checkpoint, step, layer, param, run_) with ``cka_between``, and
    (``diagnostics``) the NTK spectrum and the variables of train.linearized / train.sharpness (:func:`with_lazy`)."""
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
    return with_lazy(ds) if diagnostics else ds


LR = {"gn": 0.1, "sgd": 0.3, "adam": 0.01}
DISTANCE = {"gn": 0.05, "sgd": 0.3, "adam": 0.6}


def final_distance(distance, opt, seed):
    """GN's distance grows faster with the seed than the others', so the GN/Adam ratio differs by seed."""
    return distance.get(opt, 0.4) * (1 + (0.1 if opt == "gn" else 0.05) * seed)


def with_lazy(ds, distance=DISTANCE, modes=16):
    """``ds`` (combined) with every lazy-regime variable: per run, values that grow over the checkpoints to a final
    value set by the optimiser (and the seed), NaN where they are undefined."""
    runs, checkpoints = ds.sizes["run"], ds.sizes["checkpoint"]
    t = np.linspace(0, 1, checkpoints)
    values = {name: np.full((runs, checkpoints), np.nan) for name in (
        "linearized_distance_test", "linearized_distance_probe", "linearized_test_acc", "sharpness", "ggn_sharpness",
        "preconditioned_sharpness", "sharpness_threshold", "ntk_condition_number")}
    eigen = np.full((runs, checkpoints, modes), np.nan)
    align = np.full((runs, checkpoints, modes), np.nan)
    for r, (opt, seed) in enumerate(zip(ds["optimizer"].values, ds["seed"].values)):
        final = final_distance(distance, opt, seed)
        values["linearized_distance_test"][r, 1:] = final * t[1:]
        values["linearized_distance_probe"][r, 1:] = 0.9 * final * t[1:]
        values["linearized_test_acc"][r] = ds["test_acc"].values[r] - 0.02
        values["sharpness"][r] = 1 + 10 * t * (seed + 1)
        values["ggn_sharpness"][r] = 0.9 * values["sharpness"][r]
        if opt == "sgd":
            values["sharpness_threshold"][r] = 2 / LR[opt]
        if opt == "adam":
            values["sharpness_threshold"][r, 1:] = 38 / LR[opt]
            values["preconditioned_sharpness"][r, 1:] = 1000 * t[1:] * (seed + 1)
        spectrum = np.geomspace(100, 1, modes)[None, :] * (1 + t[:, None] * (3 if opt == "gn" else 1))
        eigen[r] = spectrum
        align[r] = np.cumsum(np.full(modes, 1 / modes))[None, :] * np.ones((checkpoints, 1))
        values["ntk_condition_number"][r] = spectrum[:, 0] / spectrum[:, -1]
    out = ds.assign_coords(ntk_mode=np.arange(1, modes + 1))
    for name, array in values.items():
        out[name] = (("run", "checkpoint"), array)
    out["ntk_eigenvalues"] = (("run", "checkpoint", "ntk_mode"), eigen)
    out["ntk_label_alignment"] = (("run", "checkpoint", "ntk_mode"), align)
    return out

