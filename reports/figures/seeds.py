"""The seeds of one optimiser drawn as one line: the one place where figures aggregate over seeds.

Runs of unequal length (a seed that diverged, was interrupted or ran fewer steps) are never cut to
the steps every seed has (issue #21 item 5). :func:`aggregate` takes the union of the seeds' x values
(steps or checkpoint steps) and, at each, the mean over the seeds that have a finite value there, with
the sample standard deviation (ddof = 1) and min/max where at least two do, and the number of seeds
behind every point; :func:`count_phrase` says in the legend how that number changes ("3 seeds to step
10, then 2"). When the seeds were recorded at different x values inside the range they all cover
(different checkpoint schedules), a mean would mix them point by point, so :func:`aggregate` returns
None and each seed is drawn as its own line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reports import plotting as p
from reports.runs import RunInfo


@dataclass(frozen=True)
class SeedAggregate:
    """Seeds of one optimiser on the union ``x`` of their x values: per point the mean, sample sd
    (NaN where count < 2), min, max (NaN where count < 2) and count of seeds with a finite value."""

    x: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    low: np.ndarray
    high: np.ndarray
    count: np.ndarray
    n_seeds: int


def seed_groups(runs: list[RunInfo]) -> list[list[RunInfo]]:
    """Runs grouped by optimiser (the seeds of one optimiser), in order of first appearance."""
    groups: dict[str, list[RunInfo]] = {}
    for r in runs:
        groups.setdefault(r.optimizer, []).append(r)
    return list(groups.values())


def aligned(series: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    """Whether the seeds share their x values inside the range all of them cover (then they differ only
    in where they start or end): [max of the first x, min of the last x]."""
    xs = [np.asarray(x, dtype=float) for x, _ in series if len(x)]
    if len(xs) < 2:
        return True
    lo, hi = max(x[0] for x in xs), min(x[-1] for x in xs)
    if lo > hi:
        return False
    inside = [x[(x >= lo) & (x <= hi)] for x in xs]
    return all(np.array_equal(inside[0], other) for other in inside[1:])


def aggregate(series: list[tuple[np.ndarray, np.ndarray]]) -> SeedAggregate | None:
    """:class:`SeedAggregate` of per-seed (x, y) series (finite points, x increasing); None when they
    are not :func:`aligned` or hold no point."""
    series = [(np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for x, y in series]
    if not any(len(x) for x, _ in series) or not aligned(series):
        return None
    x = np.unique(np.concatenate([x for x, _ in series]))
    values = np.full((len(series), x.size), np.nan)
    for i, (xi, yi) in enumerate(series):
        values[i, np.searchsorted(x, xi)] = yi
    present = np.isfinite(values)
    count = present.sum(axis=0)
    filled = np.where(present, values, 0.0)
    mean = filled.sum(axis=0) / np.maximum(count, 1)
    several = count >= 2
    squares = np.where(present, (values - mean) ** 2, 0.0).sum(axis=0)
    sd = np.where(several, np.sqrt(squares / np.maximum(count - 1, 1)), np.nan)
    low = np.where(several, np.where(present, values, np.inf).min(axis=0), np.nan)
    high = np.where(several, np.where(present, values, -np.inf).max(axis=0), np.nan)
    return SeedAggregate(x, mean, sd, low, high, count, len(series))


def count_phrase(agg: SeedAggregate) -> str:
    """How many seeds stand behind the line: "3 seeds", or where it changes, "3 seeds to step 10, then 2"."""
    starts = np.flatnonzero(np.diff(agg.count) != 0) + 1
    bounds = [0, *starts.tolist(), agg.count.size]
    segments = [(int(agg.count[a]), agg.x[b - 1]) for a, b in zip(bounds[:-1], bounds[1:])]
    first = f"{segments[0][0]} seed{'s' if segments[0][0] != 1 else ''}"
    if len(segments) == 1:
        return first
    text = f"{first} to step {segments[0][1]:g}"
    for n, last in segments[1:-1]:
        text += f", {n} to step {last:g}"
    return text + f", then {segments[-1][0]}"


def draw_group(ax, group: list[tuple[RunInfo, np.ndarray, np.ndarray]], *, scale: float = 1.0, ls: str | None = None,
               suffix: str = "", band: str = "sd", marker: str | None = "o", lw: float = 1.5,
               reduce=np.mean, legend: bool = True) -> list[np.ndarray]:
    """Draw the seeds of one optimiser — ``group`` holds (run, x, y) per seed, finite points only — and
    return the x arrays drawn. ``ls``: the line style (default: solid, or each seed's own style where
    seeds are drawn one by one). One seed: its line, labelled with the run. Several: their mean (label
    "<optimiser> (mean ± sd, <count phrase>)") with a band where at least two seeds have a value,
    ± 1 sd (``band="sd"``) or min–max (``"minmax"``); seeds not :func:`aligned`: one line each. Lines
    longer than :func:`reports.plotting.thin` allows are thinned (``reduce`` per bin for the mean, the
    band's lower edge by min and its upper edge by max). ``legend`` False: no legend entry (a second line
    of the same optimiser, explained by a style key)."""
    hide = "" if legend else "_"
    group = [(r, x, y) for r, x, y in group if len(x)]
    if not group:
        return []
    agg = aggregate([(x, y) for _, x, y in group]) if len(group) > 1 else None
    if agg is None:
        for r, x, y in group:
            tx, ty = p.thin(x, y, reduce=reduce)
            ax.plot(tx, ty * scale, color=r.color, ls=ls or r.linestyle, marker=marker, ms=3, lw=lw,
                    label=hide + p.short(r.label) + suffix)
        return [x for _, x, _ in group]
    first = group[0][0]
    kind = "mean ± sd" if band == "sd" else "mean, band min–max"
    label = f"{hide}{p.short(first.optimizer)} ({kind}, {count_phrase(agg)}){suffix}"
    x, mean = p.thin(agg.x, agg.mean, reduce=reduce)
    lower = agg.mean - agg.sd if band == "sd" else agg.low
    upper = agg.mean + agg.sd if band == "sd" else agg.high
    _, lower = p.thin(agg.x, lower, reduce=_nan_reduce(np.min))
    _, upper = p.thin(agg.x, upper, reduce=_nan_reduce(np.max))
    ax.plot(x, mean * scale, color=first.color, ls=ls or "-", marker=marker, ms=3, lw=lw, label=label)
    several = np.isfinite(lower) & np.isfinite(upper)
    if several.any():
        ax.fill_between(x, np.where(several, lower, np.nan) * scale, np.where(several, upper, np.nan) * scale,
                        color=first.color, alpha=0.2, lw=0)
    return [agg.x]


def _nan_reduce(reduce):
    """``reduce`` over the finite values of a bin (NaN when it has none)."""
    def bin_value(values: np.ndarray) -> float:
        finite = values[np.isfinite(values)]
        return float(reduce(finite)) if finite.size else np.nan
    return bin_value
