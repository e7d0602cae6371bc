"""``analyze(run)``: every diagnostic of one run store as an xarray Dataset (DESIGN §6 "Analysis").

By checkpoint: losses/accuracies copied from the store (and, where recorded, the linearised twin's and
the sharpness scalars, :mod:`trainers.lazy`); NTK alignment to init, NTK velocity,
kernel–target alignment and NTK entropy effective rank; the NTK spectrum (eigenvalues, cumulative
label alignment along ``ntk_mode``, condition number; :mod:`analysis.ntk_spectrum`); per layer linear CKA to init, entropy
effective rank of the centred representation and linear-probe accuracy (:mod:`analysis.probes`);
per parameter relative change and cosine to init. By step: loss and GN residual copied from the
metrics; relative and log changes of the own, next and held-out ("other") batch, transfer and
moving averages (:mod:`analysis.overfitting`); the optimiser phase index (NaN when not recorded). A
quantity the store does not hold (no NTK, a first-order run without ``gn_residual``) is all NaN, so
every run's Dataset has the same variables.

Task (:mod:`dynamics.task`): the store's recorded ``task`` (or, for a store written before, the rule
applied to its probe targets and config) decides the quantities that use the probe targets — the
kernel–target alignment (one-hot Y of the labels, or the targets) and the probe (``probe_accuracy``
for classification, ``probe_r2`` for regression; the other is NaN). The Dataset says which it used:
attrs ``task`` and ``task_source``, attr ``task`` on those variables and a description that names it.

Non-finite inputs (:mod:`analysis.nonfinite`): a quantity is NaN where an input it uses is NaN or
±inf and is computed everywhere else; the Dataset records where (attr ``nonfinite``, JSON) and the
training step of the first non-finite input (``first_nonfinite_step``, NaN when none), and one
RuntimeWarning says so.

The result is written to the run's store as group ``analysis`` (replacing an earlier one; the
training groups are not touched) and can be read back without recomputation with
``xarray.open_zarr(store, group="analysis")``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from analysis.checkpoint_metrics import (REPRESENTATION_METRICS, checkpoints_selected,
                                         ntk_metrics, representation_metrics, weight_metrics)
from analysis.ntk_spectrum import MODE_DIM, SpectrumMetrics
from analysis.freshness import ALIGNMENT_KEY, SOURCE_ATTR, alignment_kind, analysis_token, source_token
from analysis.progress import AnalysisProgress, check_mode
from analysis.overfitting import (default_window, log_change_percent, moving_average, relative_change_percent,
                                  transfer_ratio)
from analysis.nonfinite import ATTR as NONFINITE_ATTR, FIRST_STEP, NonFiniteInputs
from dynamics.errors import NotWrittenWarning, StoreReadOnlyError
from analysis.store_io import (group, open_tree, run_identity, store_order, string_coord, with_cf_attrs,
                               write_analysis_group)
from dynamics.linearize import LINEAR_SCALARS
from dynamics.sharpness import SHARPNESS_SCALARS
from dynamics.task import class_labels, recorded_task, regression_targets

DEFAULT_MAX_MEMORY = 1 << 30  # bytes of one checkpoint's representation processed in memory
SINGLE_THREAD_ELEMENTS = 1 << 22  # per-checkpoint matrices up to this size use one BLAS thread
CHECKPOINT_SCALARS = ("train_loss", "train_acc", "test_loss", "test_acc", *LINEAR_SCALARS, *SHARPNESS_SCALARS)
COORDINATES = ("step", "epoch", "checkpoint_step", "checkpoint_epoch")   # never parameters
ALIGNMENT_VARIABLES = ("ntk_alignment_init", "ntk_velocity", "ntk_target_alignment")
LOSS_PAIRS = {"own": ("loss", "loss_after"), "next": ("next_loss", "next_loss_after"),
              "other": ("other_loss", "other_loss_after")}
#: scalars whose NaN in the store's ``nonfinite`` record marks divergence (analysis.nonfinite)
NONFINITE_INPUTS = {"metrics": {name for pair in LOSS_PAIRS.values() for name in pair},
                    "checkpoints": set(CHECKPOINT_SCALARS)}
#: what the variables that use the probe targets hold, per task (their ``description``)
TASK_DESCRIPTIONS = {
    "classification": {
        "ntk_target_alignment": "A(Θ_t, YYᵀ) with Y (N, C) the one-hot encoding of the probe's class labels "
                                "(task: classification)",
        "probe_accuracy": "cross-validated logistic-regression accuracy on the layer's probe representation "
                          "(task: classification; NaN where no probe was fitted)",
        "probe_r2": "not computed: the probe targets are class labels (task: classification), see probe_accuracy",
    },
    "regression": {
        "ntk_target_alignment": "A(Θ_t, YYᵀ) with Y the probe's regression targets, y (N,) as one column "
                                "(A(Θ_t, yyᵀ)) or Y (N, O) (task: regression)",
        "probe_accuracy": "not computed: the probe targets are real numbers (task: regression), see probe_r2",
        "probe_r2": "cross-validated R² of a ridge-regression probe on the layer's probe representation "
                    "(task: regression; NaN where no probe was fitted)",
    },
}


def analyze(run: object, *, probe_checkpoints: object = "all", probe_folds: int = 3, probe_max_iter: int = 100,
            max_memory: int = DEFAULT_MAX_MEMORY, smoothing_window: int | None = None, write: bool = True,
            store: str | os.PathLike | None = None, centered_alignment: bool = False,
            progress: str = "auto") -> xr.Dataset:
    """Analyse one run (a store path or the DataTree of :func:`dynamics.store.open_run`).

    Args:
        probe_checkpoints: where linear probes are fitted — "all" (default), "last", "ends", "none",
            or checkpoint indices; elsewhere ``probe_accuracy`` is NaN. Probes are the costly part
            (``probe_folds``-fold cross-validated logistic regression, ``probe_max_iter`` lbfgs steps).
        max_memory: bytes (as float64) of one checkpoint's representation above which it is read in
            probe chunks (CKA and rank from accumulated XᵀX, YᵀY, YᵀX; same values as in memory).
        smoothing_window: steps of the trailing moving averages; default max(1, n_steps // 50).
        centered_alignment: the NTK alignments (to init, velocity, to the labels) are centred kernel
            alignments A(HK₁H, HK₂H), H = I − 11ᵀ/N (Cortes et al. 2012), instead of the plain
            A(K₁, K₂). Recorded in attrs ``kernel_alignment`` ("centred"/"uncentred", also on the
            three variables) and in the ``source`` token, so a stored analysis of the other kind is
            never taken for this one (:func:`analysis.freshness.analysis_token`).
        progress: "auto" (a bar on a terminal), "bar", "lines" or "off": progress of an analysis that
            takes more than 2 s, on stderr, counted in checkpoint-variables (:mod:`analysis.progress`).
        write: write the result into the store as group ``analysis`` (needs a path: ``run`` itself
            or ``store`` when ``run`` is a DataTree). Skipped, leaving the store untouched, while
            another process holds the store's lock (a live run: its committed data is analysed),
            when the store changed during the analysis, or — with a NotWrittenWarning — when the
            store cannot be written (a read-only file system; see :mod:`analysis.store_io`).

    Returns the Dataset of DESIGN §6 with attrs ``config`` (JSON), ``optimizer``, ``seed``,
    ``analysis`` (JSON of the settings used), ``kernel_alignment`` and, for a store path, ``source``
    (JSON: the store's token it was computed from with the options, :mod:`analysis.freshness`).
    """
    if isinstance(max_memory, bool) or not isinstance(max_memory, (int, np.integer)) or max_memory < 1:
        raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory!r}")
    kind = alignment_kind(centered_alignment)
    check_mode(progress)
    path = Path(store) if store is not None else (Path(run) if isinstance(run, (str, os.PathLike)) else None)
    token = source_token(path) if path is not None and (path / "zarr.json").is_file() else None
    tree, _ = open_tree(run)  # the token is taken first: a store that changes meanwhile is not written
    checkpoints, metrics = group(tree, "checkpoints"), group(tree, "metrics")
    params, probe = group(tree, "params"), group(tree, "probe")
    config_json, config, optimizer, seed = run_identity(tree, path)
    n = checkpoints.sizes.get("checkpoint", 0)
    y = np.asarray(probe["y"].values)
    task, task_source = recorded_task(dict(tree.attrs), y, config)
    targets = class_labels(y) if task == "classification" else regression_targets(y)
    probe_at = checkpoints_selected(probe_checkpoints, n)
    record = NonFiniteInputs()

    # Small per-checkpoint matrices (a 256×256 NTK, 256×40 representations) gain nothing from BLAS
    # threads, and on a busy machine spinning threads make each eigvalsh/svd up to ~100x slower.
    largest = max([int(np.prod(checkpoints[v].shape[1:])) for v in checkpoints.data_vars
                   if v == "ntk" or v.startswith("rep_")], default=0)
    variables = ("ntk" in checkpoints) + sum(str(v).startswith("rep_") for v in checkpoints.data_vars) + sum(
        v not in COORDINATES for v in params.data_vars)
    with threadpool_limits(limits=1 if largest <= SINGLE_THREAD_ELEMENTS else None, user_api="blas"), \
            AnalysisProgress(n * variables, desc=path.name if path is not None else optimizer, mode=progress) as bar:
        data, (layers, param_names, steps, window, modes) = _compute(
            checkpoints, metrics, params, tree, task, targets, probe_at, n, int(max_memory), probe_folds,
            probe_max_iter, smoothing_window, centered_alignment, record, bar)

    coords = {
        "checkpoint": np.arange(n, dtype=np.int64),
        "checkpoint_step": ("checkpoint", _coordinate(checkpoints, ("checkpoint_step", "step"), n, np.int64)),
        "checkpoint_epoch": ("checkpoint", _coordinate(checkpoints, ("checkpoint_epoch", "epoch"), n, np.float64)),
        "step": steps,
        "epoch": ("step", _coordinate(metrics, ("epoch",), steps.size, np.float64)),
        "layer": string_coord(layers), "param": string_coord(param_names), MODE_DIM: modes,
    }
    settings = {"probe_checkpoints": np.flatnonzero(probe_at).tolist(), "probe_folds": probe_folds,
                "probe_max_iter": probe_max_iter, "smoothing_window": window, "max_memory": int(max_memory),
                "centered_alignment": centered_alignment}
    checkpoint_steps = coords["checkpoint_step"][1]
    record.add_store_record(tree.attrs.get("nonfinite"), checkpoint_steps, steps, NONFINITE_INPUTS)
    data[FIRST_STEP] = ((), record.first_step(checkpoint_steps))
    record.warn(f"analysis of {path if path is not None else optimizer}")
    attrs = {"config": config_json, "optimizer": optimizer, "seed": seed, "analysis": json.dumps(settings),
             ALIGNMENT_KEY: kind, "task": task, "task_source": task_source,
             NONFINITE_ATTR: json.dumps(record.summary(checkpoint_steps))}
    recorded = None if token is None else analysis_token(token, centered_alignment=centered_alignment)
    if recorded is not None:
        attrs[SOURCE_ATTR] = json.dumps(recorded, sort_keys=True)
    result = with_cf_attrs(xr.Dataset(data, coords=coords, attrs=attrs))
    for name in ALIGNMENT_VARIABLES:
        result[name].attrs[ALIGNMENT_KEY] = kind
    for name, description in TASK_DESCRIPTIONS[task].items():
        result[name].attrs.update(task=task, description=description)
    if write:
        if token is None:
            raise ValueError("analyze(write=True) on a DataTree needs store=PATH to write the analysis group into")
        try:
            write_analysis_group(path, result, token, recorded)
        except StoreReadOnlyError as err:   # an archive, a read-only mount: analysed in memory
            warnings.warn(f"store {path} cannot be written ({err.reason}): its analysis is kept in memory, not "
                          f"stored in it (`dynamics analyze {path} --out PATH` writes it elsewhere)",
                          NotWrittenWarning, stacklevel=2)
    return result


def _compute(checkpoints: xr.Dataset, metrics: xr.Dataset, params: xr.Dataset, tree: xr.DataTree, task: str,
             targets: np.ndarray, probe_at: np.ndarray, n: int, max_memory: int, probe_folds: int,
             probe_max_iter: int, smoothing_window: int | None, centered_alignment: bool,
             record: NonFiniteInputs, bar: AnalysisProgress | None = None) -> tuple[dict, tuple]:
    """Every variable of the analysis Dataset, and (layers, parameter names, steps, window); each
    variable's checkpoints are reported to ``bar``."""
    bar = AnalysisProgress(0, desc="", mode="off") if bar is None else bar
    data: dict[str, tuple] = {}
    checkpoint_steps = _coordinate(checkpoints, ("checkpoint_step", "step"), n, np.int64)
    for name in CHECKPOINT_SCALARS:
        values = checkpoints[name].values if name in checkpoints else np.full(n, np.nan)
        data[name] = ("checkpoint", finite_or_nan(values, f"checkpoints/{name}", checkpoint_steps, record))
    ntk = checkpoints["ntk"] if "ntk" in checkpoints else None
    # the spectrum's Y: one-hot of the class labels, or the regression targets as (N, O) columns
    kernel_targets = targets if task == "classification" else np.asarray(targets, np.float64).reshape(len(targets),
                                                                                                      -1)
    spectra = SpectrumMetrics(n, 0 if ntk is None else int(ntk.shape[1]), kernel_targets, centered=centered_alignment)
    for name, values in ntk_metrics(ntk, task, targets, n, max_memory, centered=centered_alignment, record=record,
                                    progress=bar.part(n) if ntk is not None else None, on_kernel=spectra.add).items():
        data[name] = ("checkpoint", values)
    spectrum_variables, modes = spectra.result()
    data.update(spectrum_variables)

    rep_names = store_order(tree, "checkpoints", [name for name in checkpoints.data_vars if name.startswith("rep_")])
    layers = [name.removeprefix("rep_") for name in rep_names]
    per_layer = {name: np.full((n, len(layers)), np.nan) for name in REPRESENTATION_METRICS}
    for j, layer in enumerate(layers):
        result = representation_metrics(checkpoints[f"rep_{layer}"], task, targets, probe_at, max_memory=max_memory,
                                        folds=probe_folds, max_iter=probe_max_iter, record=record,
                                        progress=bar.part(n))
        for name, values in result.items():
            per_layer[name][:, j] = values
    data.update({name: (("checkpoint", "layer"), values) for name, values in per_layer.items()})

    param_names = store_order(tree, "params", [name for name in params.data_vars if name not in COORDINATES])
    per_param = {name: np.full((n, len(param_names)), np.nan) for name in ("rel", "cos", "delta")}
    init_norm = np.full(len(param_names), np.nan)
    first_last = str(tree.attrs.get("params", "all")) == "first_last"
    for j, name in enumerate(param_names):
        result = weight_metrics(params[name], max_memory, record=record, first_last=first_last,
                                progress=bar.part(n))
        for key, values in per_param.items():
            values[:, j] = result[key]
        init_norm[j] = result["init_norm"]
    zero_init = [name for name, norm in zip(param_names, init_norm) if norm == 0]
    if zero_init:   # one message per model, not per tensor and run: identical messages are shown once
        warnings.warn(f"parameters all zeros at the first checkpoint: {', '.join(zero_init)}; their relative "
                      "change and cosine to init are NaN (the norm-weighted weight change still counts them)",
                      RuntimeWarning, stacklevel=2)
    data["weight_rel_change"] = (("checkpoint", "param"), per_param["rel"])
    data["weight_cosine_init"] = (("checkpoint", "param"), per_param["cos"])
    data["weight_delta_norm"] = (("checkpoint", "param"), per_param["delta"])
    data["weight_init_norm"] = ("param", init_norm)
    data["param_ndim"] = ("param", np.array([params[name].ndim - 1 for name in param_names], dtype=np.int64))

    steps, step_data, window = step_metrics(metrics, smoothing_window, record)
    data.update(step_data)
    return data, (layers, param_names, steps, window, modes)


def finite_or_nan(values: object, name: str, steps: np.ndarray, record: NonFiniteInputs) -> np.ndarray:
    """``values`` (one per step) as float64 with ±inf → NaN, the steps of the infinities recorded in ``record``
    (NaN is read as "not recorded": the store's own ``nonfinite`` record says which NaN were non-finite)."""
    values = np.asarray(values, dtype=np.float64)
    infinite = np.isinf(values)
    if infinite.any():
        record.add_steps(name, steps[infinite])
        values = np.where(infinite, np.nan, values)
    return values


def step_metrics(metrics: xr.Dataset, window: int | None,
                 record: NonFiniteInputs | None = None) -> tuple[np.ndarray, dict[str, tuple], int]:
    """(steps, per-step variables, window used) from the run's ``metrics`` group; a step whose inputs
    are ±inf gives NaN (recorded in ``record``)."""
    steps = np.asarray(metrics["step"].values if "step" in metrics.coords else [], dtype=np.int64)
    s = steps.size
    record = NonFiniteInputs() if record is None else record

    def column(name: str) -> np.ndarray:
        if name not in metrics:
            return np.full(s, np.nan)
        return finite_or_nan(metrics[name].values, f"metrics/{name}", steps, record)

    pairs = LOSS_PAIRS
    window = default_window(s) if window is None else window
    data = {"loss": ("step", column("loss")), "gn_residual": ("step", column("gn_residual"))}
    for batch, (before, after) in pairs.items():
        change = relative_change_percent(column(before), column(after))
        data[f"{batch}_change"] = ("step", change)
        data[f"{batch}_log_change"] = ("step", log_change_percent(column(before), column(after)))
        data[f"{batch}_change_smooth"] = ("step", moving_average(change, window))
    own, other = data["own_change"][1], data["other_change"][1]
    data["transfer"] = ("step", transfer_ratio(own, other))
    data["transfer_smooth"] = ("step", transfer_ratio(data["own_change_smooth"][1], data["other_change_smooth"][1]))
    data["phase"] = ("step", column("phase"))
    return steps, data, int(window)


def _coordinate(ds: xr.Dataset, names: tuple[str, ...], n: int, dtype: type) -> np.ndarray:
    for name in names:
        if name in ds.variables:
            return np.asarray(ds[name].values).astype(dtype)
    return np.full(n, -1 if dtype is np.int64 else np.nan, dtype=dtype)
