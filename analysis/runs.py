"""Several runs at once: ``open_runs`` (combine analyses along ``run``), ``cka_between``,
``analyze_experiment`` (DESIGN §6 "Analysis").

Labels (:mod:`analysis.labels`, the one rule): a run is labelled by its optimizer; when an optimizer
occurs more than once, by "<optimizer>-seed<seed>"; a label that still repeats gets the shortest
distinguishing suffix of its store path, "gn-seed0 (a/gn)". Labels are unique by construction, so no
two runs are merged; the same store given twice is refused. The ``run`` dimension is indexed by these
labels, with coordinates ``optimizer``, ``seed`` and ``label``.
Runs of different lengths are NaN-padded (outer join on ``checkpoint`` and ``step``); coordinates that
differ between runs (``checkpoint_step``, ``epoch``...) gain the ``run`` dimension.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from analysis.cka import linear_cka
from analysis.labels import path_suffixes, run_labels
from analysis.nonfinite import ATTR as NONFINITE_ATTR, is_finite
from analysis.run_analysis import ALIGNMENT_VARIABLES, SINGLE_THREAD_ELEMENTS, TASK_DESCRIPTIONS, analyze
from analysis.freshness import ALIGNMENT_KEY, SOURCE_ATTR, analysis_token, source_token
from analysis.store_io import fresh_analysis, group, open_tree, with_cf_attrs, write_derived
from dynamics.errors import StoreError
from dynamics.store.probe import input_names

EXPERIMENT_ANALYSIS = "analysis.zarr"
EXPERIMENT_SCHEMA = "dynamics.experiment-analysis/1"


def is_experiment_analysis(path: Path) -> bool:
    """True for the combined analysis of an experiment folder (root attribute ``schema`` =
    :data:`EXPERIMENT_SCHEMA`, or the name ``analysis.zarr``): not a run store, skipped by
    :func:`open_runs` so that ``open_runs(glob("*.zarr"))`` works on an analysed folder."""
    if path.name == EXPERIMENT_ANALYSIS:
        return True
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and (meta.get("attributes") or {}).get("schema") == EXPERIMENT_SCHEMA


def open_runs(paths: Iterable[str | os.PathLike], *, compute_missing: bool = True,
              centered_alignment: bool = False) -> xr.Dataset:
    """Stored analyses of the run stores ``paths`` along dim ``run``, plus ``cka_between``.

    A stored analysis is used only when it was computed from the store's current committed data
    (its ``source`` token, :mod:`analysis.freshness`); a store without one, or with one computed
    before the run was resumed, truncated or changed, is analysed again (and the group rewritten,
    unless the store is locked by a live writer) when ``compute_missing`` is true; otherwise
    ValueError naming the store and the reason. Experiment analyses (``analysis.zarr``) among
    ``paths`` are skipped. ``centered_alignment`` asks for centred NTK alignments (a stored analysis
    of the other kind is recomputed, :func:`analysis.freshness.analysis_token`). Attrs: ``configs``
    (JSON: label → config), ``config`` (the first run's config JSON) and ``kernel_alignment``.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    given = [Path(p) for p in paths]
    stores = [p for p in given if not is_experiment_analysis(p)]
    if not stores:
        raise ValueError("open_runs needs at least one run store path, got "
                         + ("none" if not given else f"only experiment analyses {[str(p) for p in given]}"))
    path_suffixes(stores)   # the same store twice is refused before anything is analysed
    analyses = []
    for store in stores:
        result, why = (fresh_analysis(store, centered_alignment=centered_alignment)
                       if (store / "zarr.json").is_file() else (None, "no analysis group"))
        if result is None:
            if not compute_missing:
                raise ValueError(f"run store {str(store)!r}: {why}; run analysis.analyze on it first")
            result = analyze(store, centered_alignment=centered_alignment)
        analyses.append(result)
    return combine(analyses, stores)


def combine(analyses: list[xr.Dataset], stores: list[Path]) -> xr.Dataset:
    """The per-run analyses of ``stores`` along dim ``run``, with ``cka_between`` (see :func:`open_runs`)."""
    labels = run_labels([(a.attrs["optimizer"], int(a.attrs["seed"])) for a in analyses], stores)
    combined = xr.concat(_same_variables([a.drop_attrs() for a in analyses]), dim="run", join="outer",
                         coords="different",
                         compat="equals", data_vars="all", fill_value=np.nan)
    tasks = [str(a.attrs.get("task", "classification")) for a in analyses]
    combined = combined.assign_coords(run=labels, optimizer=("run", [str(a.attrs["optimizer"]) for a in analyses]),
                                      seed=("run", np.asarray([int(a.attrs["seed"]) for a in analyses], dtype=np.int64)),
                                      label=("run", labels), task=("run", tasks))
    combined["cka_between"] = cka_between(stores, labels=labels, layers=[str(v) for v in combined["layer"].values],
                                          n_checkpoints=combined.sizes["checkpoint"])
    configs = {label: json.loads(a.attrs["config"]) for label, a in zip(labels, analyses)}
    kinds = sorted({str(a.attrs.get(ALIGNMENT_KEY, "uncentred")) for a in analyses})
    if len(kinds) > 1:
        raise ValueError(f"cannot combine analyses of different kernel alignments ({', '.join(kinds)}); analyse "
                         "every run with the same centered_alignment")
    combined.attrs = {"config": analyses[0].attrs["config"], "configs": json.dumps(configs, sort_keys=True),
                      ALIGNMENT_KEY: kinds[0], "task": tasks[0] if len(set(tasks)) == 1 else "mixed",
                      NONFINITE_ATTR: json.dumps({label: json.loads(a.attrs.get(NONFINITE_ATTR, "{}"))
                                                  for label, a in zip(labels, analyses)}, sort_keys=True)}
    with_cf_attrs(combined)
    for name in ALIGNMENT_VARIABLES:
        if name in combined:
            combined[name].attrs[ALIGNMENT_KEY] = kinds[0]
    for name in TASK_DESCRIPTIONS["classification"]:
        if name in combined and len(set(tasks)) == 1:
            combined[name].attrs.update(task=tasks[0], description=TASK_DESCRIPTIONS[tasks[0]][name])
    return combined


def _same_variables(analyses: list[xr.Dataset]) -> list[xr.Dataset]:
    """The analyses with every data variable any of them has (NaN where one lacks it: an analysis
    written by another version), so that they concatenate."""
    every: dict[str, xr.DataArray] = {}
    for a in analyses:
        every.update({name: a[name] for name in a.data_vars if name not in every})
    out = []
    for a in analyses:
        missing = {}
        for name, like in every.items():
            if name in a.data_vars:
                continue
            shape = tuple(a.sizes.get(d, like.sizes[d]) for d in like.dims)
            coords = {d: like[d].values for d in like.dims if d not in a.dims and d in like.coords}
            missing[name] = xr.DataArray(np.full(shape, np.nan), dims=like.dims, coords=coords, attrs=like.attrs)
        out.append(a.assign(missing) if missing else a)
    return out


def cka_between(runs: list[object], *, labels: list[str] | None = None, layers: list[str] | None = None,
                n_checkpoints: int | None = None) -> xr.DataArray:
    """Linear CKA between the representations of run i and run j at the same checkpoint index, per layer.

    Dims (run, run_, checkpoint, layer); NaN where a run lacks that checkpoint or layer, or where a
    representation is not finite (a diverged run, :mod:`analysis.nonfinite`). Runs whose probe inputs
    differ (other data, other probe set) are not comparable: their entries are NaN and a
    RuntimeWarning says so. The diagonal is 1 wherever a representation is finite and not constant.
    """
    trees = [open_tree(run)[0] for run in runs]
    labels = labels or [str(i) for i in range(len(trees))]
    checkpoint_groups = [group(tree, "checkpoints") for tree in trees]
    if layers is None:
        layers = sorted({v.removeprefix("rep_") for ck in checkpoint_groups for v in ck.data_vars if v.startswith("rep_")})
    if n_checkpoints is None:
        n_checkpoints = max((ck.sizes.get("checkpoint", 0) for ck in checkpoint_groups), default=0)
    probes = [{name: np.asarray(probe[name].values) for name in input_names(list(probe.data_vars))}
              for probe in (group(tree, "probe") for tree in trees)]   # every model input (dynamics.store.probe)
    r = len(trees)
    comparable = np.ones((r, r), dtype=bool)
    for i in range(r):
        for j in range(i + 1, r):
            if probes[i].keys() != probes[j].keys() or not all(
                    probes[i][k].shape == probes[j][k].shape and np.array_equal(probes[i][k], probes[j][k])
                    for k in probes[i]):
                comparable[i, j] = comparable[j, i] = False
                warnings.warn(f"runs {labels[i]!r} and {labels[j]!r} have different probe inputs: their CKA is NaN",
                              RuntimeWarning, stacklevel=2)
    out = np.full((r, r, n_checkpoints, len(layers)), np.nan)
    largest = max([int(np.prod(ck[f"rep_{layer}"].shape[1:])) for ck in checkpoint_groups for layer in layers
                   if f"rep_{layer}" in ck], default=0)
    with threadpool_limits(limits=1 if largest <= SINGLE_THREAD_ELEMENTS else None, user_api="blas"):
        _fill_between(out, checkpoint_groups, layers, comparable, n_checkpoints)
    return xr.DataArray(out, dims=("run", "run_", "checkpoint", "layer"),
                        coords={"run": labels, "run_": labels, "checkpoint": np.arange(n_checkpoints),
                                "layer": np.asarray(layers, dtype=str)})


def _fill_between(out: np.ndarray, checkpoint_groups: list[xr.Dataset], layers: list[str], comparable: np.ndarray,
                  n_checkpoints: int) -> None:
    """out[i, j, c, k] = linear CKA of run i and run j at checkpoint c, layer k (symmetric), in place."""
    for k, layer in enumerate(layers):
        name = f"rep_{layer}"
        for c in range(n_checkpoints):  # one checkpoint of every run in memory at a time
            reps = {i: ck[name].isel(checkpoint=c).values for i, ck in enumerate(checkpoint_groups)
                    if name in ck and c < ck.sizes["checkpoint"]}
            reps = {i: rep for i, rep in reps.items() if is_finite(rep)}   # NaN where not finite
            for i in reps:
                for j in reps:
                    if j >= i and comparable[i, j]:
                        out[i, j, c, k] = out[j, i, c, k] = linear_cka(reps[i], reps[j])

def analyze_experiment(run_dir: str | os.PathLike, *, reuse: bool = False, out: str | os.PathLike | None = None,
                       **analyze_options: object) -> xr.Dataset:
    """``analyze`` every run store (``*.zarr``, except ``analysis.zarr``) of ``run_dir``, then combine.

    The combined Dataset is also written to ``out`` (default ``run_dir/analysis.zarr``; a folder that
    cannot be written, e.g. a read-only archive, keeps it in memory with a NotWrittenWarning, and so
    do its stores: :func:`analysis.store_io.write_derived`) (replaced in one step; root
    attrs ``schema`` = :data:`EXPERIMENT_SCHEMA` and ``sources``, JSON store name → source token, so
    that :func:`experiment_analysis_is_fresh` can tell when it is out of date). Runs being trained
    are analysed from their committed data, without writing into their stores. Options are passed
    to :func:`analysis.analyze`. ``reuse``: a store's own analysis group is taken instead of
    analysing it again when it was computed from the store's current data with the same kernel
    alignment (``dynamics run`` analyses each run in its worker process right after training it;
    only meaningful without other options). A warning that several runs raise alike (zero-initialised
    biases in every run of one model) is issued once. StoreError (a ValueError) when the folder
    holds no run store.
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise StoreError(f"run_dir {str(folder)!r} is not a directory")
    stores = experiment_stores(folder)
    if not stores:
        raise StoreError(f"run_dir {str(folder)!r} holds no run stores (*.zarr)")
    centered = bool(analyze_options.get("centered_alignment", False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        analyses = []
        for store in stores:
            stored = fresh_analysis(store, centered_alignment=centered)[0] if reuse else None
            analyses.append(stored if stored is not None else analyze(store, **analyze_options))
    for category, message in dict.fromkeys((w.category, str(w.message)) for w in caught):
        warnings.warn(message, category, stacklevel=2)
    combined = combine(analyses, stores)
    sources = {store.name: json.loads(a.attrs.get(SOURCE_ATTR, "null")) for store, a in zip(stores, analyses)}
    write_derived(folder / EXPERIMENT_ANALYSIS if out is None else Path(out), combined.assign_attrs(
        schema=EXPERIMENT_SCHEMA, sources=json.dumps(sources, sort_keys=True)), required=out is not None)
    return combined


def experiment_stores(folder: Path) -> list[Path]:
    """The run stores of an experiment folder: its ``*.zarr`` folders except experiment analyses, sorted."""
    return sorted(p for p in folder.glob("*.zarr") if p.is_dir() and not is_experiment_analysis(p))


def experiment_analysis_is_fresh(run_dir: str | os.PathLike, *, centered_alignment: bool = False) -> bool | None:
    """Whether ``run_dir/analysis.zarr`` was computed from the folder's current run stores with the
    requested kernel alignment: True/False from its ``sources`` token (the same set of stores, each
    with its current token and the options, :func:`analysis.freshness.analysis_token`); None when it
    has no ``sources`` attribute (written by an older version) or is absent."""
    folder = Path(run_dir)
    try:
        meta = json.loads((folder / EXPERIMENT_ANALYSIS / "zarr.json").read_text())
        sources = json.loads(meta["attributes"]["sources"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    stores = experiment_stores(folder)
    if not isinstance(sources, dict) or sorted(sources) != [s.name for s in stores]:
        return False
    try:
        return all(sources[s.name] == analysis_token(source_token(s), centered_alignment=centered_alignment)
                   for s in stores)
    except StoreError:
        return False



