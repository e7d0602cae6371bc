"""Run labels: the one rule that names runs (and experiment folders) wherever several are shown together.

Every place that gives a run a label — :func:`analysis.open_runs` and :func:`analysis.analyze_experiment`
(the ``run`` dimension and ``configs``), the report's run table (:func:`reports.experiment.store_infos`),
``dynamics compare`` (experiment names) and :func:`analysis.open_sweep` (the ``run`` variable) — goes
through :func:`unique_labels`, so labels are unique by construction and two runs are never merged:

1. the preferred name: a run's optimizer, or ``<optimizer>-seed<seed>`` when its optimizer occurs
   more than once (:func:`run_labels`);
2. a name that still repeats gets `` (<suffix>)`` appended, the shortest suffix of the store's path
   (folders joined by "/", ".zarr" dropped) that tells the runs of that name apart:
   ``a/gn.zarr`` and ``b/gn.zarr`` with the same optimizer and seed → ``gn-seed0 (a/gn)``, ``gn-seed0 (b/gn)``;
3. paths are compared resolved (symbolic links, ``..`` and relative spellings followed), so two of
   them naming the same store are refused with a ValueError rather than labelled twice.

Labels are values of a coordinate and keys of the ``configs`` JSON attribute, never storage keys of
the zarr hierarchy, so they may hold any character.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path


def path_suffixes(paths: Sequence[str | os.PathLike]) -> list[str]:
    """The shortest suffixes (last d parts, joined by "/", the final ".zarr" dropped; the same d for
    every path) of the resolved ``paths`` that are pairwise distinct.

    Raises ValueError naming them when two paths resolve to the same location."""
    resolved = [Path(p).resolve() for p in paths]
    seen: dict[Path, str] = {}
    for given, real in zip(paths, resolved):
        if real in seen:
            raise ValueError(f"{str(seen[real])!r} and {str(given)!r} are the same store ({real}); give each run once")
        seen[real] = str(given)
    if len(resolved) < 2:
        return [_suffix(p, 1) for p in resolved]
    for depth in range(1, max(len(p.parts) for p in resolved) + 1):
        suffixes = [_suffix(p, depth) for p in resolved]
        if len(set(suffixes)) == len(suffixes):
            return suffixes
    return [str(p) for p in resolved]   # paths that differ only by ".zarr" ("a/gn" and "a/gn.zarr")


def _suffix(path: Path, depth: int) -> str:
    parts = list(path.parts[-depth:])
    parts[-1] = parts[-1].removesuffix(".zarr")
    return "/".join(part for part in parts if part != "/") or str(path)


def unique_labels(names: Sequence[str], paths: Sequence[str | os.PathLike | None]) -> list[str]:
    """``names`` (one per run), each made unique where it repeats by its store path's shortest
    distinguishing suffix: ``"<name> (<suffix>)"`` (module docstring).

    Raises ValueError when two paths are the same store, or when runs of one name cannot be told
    apart because a path is missing (``None``, e.g. an in-memory DataTree)."""
    if len(names) != len(paths):
        raise ValueError(f"got {len(names)} names for {len(paths)} store paths")
    known = [p for p in paths if p is not None]
    path_suffixes(known)   # refuses the same store given twice, whatever the names
    labels = [str(name) for name in names]
    for _ in range(len(labels)):   # each round settles the names repeated before it
        counts = Counter(labels)
        repeated = {label for label, count in counts.items() if count > 1}
        if not repeated:
            return labels
        for label in repeated:
            members = [i for i, other in enumerate(labels) if other == label]
            if any(paths[i] is None for i in members):
                raise ValueError(f"{len(members)} runs would all be labelled {label!r} and not every one has a "
                                 "store path to tell them apart; open them from their stores")
            for i, suffix in zip(members, path_suffixes([paths[i] for i in members])):
                labels[i] = f"{label} ({suffix})"
    if len(set(labels)) != len(labels):   # a name that equals another's disambiguated label, e.g. "a (x)"
        return [f"{name} ({suffix})" for name, suffix in zip(names, path_suffixes(known))] \
            if len(known) == len(paths) else _refuse(labels)
    return labels


def _refuse(labels: list[str]) -> list[str]:
    repeated = sorted(label for label, count in Counter(labels).items() if count > 1)
    raise ValueError(f"run labels {repeated} repeat and the runs have no store paths to tell them apart")


def run_labels(identities: Sequence[tuple[str, int]], paths: Sequence[str | os.PathLike | None]) -> list[str]:
    """Labels of runs given as (optimizer, seed) with their store paths: the optimizer; or
    "<optimizer>-seed<seed>" when it occurs more than once (a seed < 0, unknown, is left out);
    then :func:`unique_labels`. Unique by construction, or ValueError (see :func:`unique_labels`)."""
    per_optimizer = Counter(str(opt) for opt, _ in identities)
    names = [str(opt) if per_optimizer[str(opt)] == 1 or int(seed) < 0 else f"{opt}-seed{int(seed)}"
             for opt, seed in identities]
    return unique_labels(names, paths)


def run_identity(config: object, path: str | os.PathLike | None) -> tuple[str, int]:
    """(optimizer, seed) of a run from its config dict: the optimizer is ``config["optimizer"]`` (its
    ``name``, else ``kind``, when it is a table), else the store's file name without ".zarr" (else
    "run"); the seed is ``config["seed"]``, else ``config["train"]["seed"]``, else -1 (unknown)."""
    config = config if isinstance(config, dict) else {}
    optimizer = config.get("optimizer")
    if isinstance(optimizer, dict):
        optimizer = optimizer.get("name") or optimizer.get("kind")
    if not optimizer:
        optimizer = Path(path).name.removesuffix(".zarr") if path is not None else "run"
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    seed = config.get("seed", train.get("seed", -1))
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        seed = -1
    return str(optimizer), seed
