"""Per-minibatch overfitting: how much a step helps the batch it was taken on vs another batch.

For each step (DESIGN §3): own change   = 100 · (L_after − L_before) / L_before on the batch just
trained on; other change = the same on a fixed other batch; transfer = other / own (near 0 when the
update does not generalise across batches, ≈ 1 when it helps both alike).
- A loss before the step of exactly 0 leaves the percentage undefined: NaN.
- Where |own change| ≤ ``atol`` (default 1e-9 percent: the step did not change its own batch's loss)
  the transfer ratio is NaN, not ±inf.
- Smoothing is a trailing moving average over ``window`` steps (default max(1, n_steps // 50)),
  ignoring NaN entries; an output entry is NaN only when its whole window is NaN. The smoothed
  transfer is the ratio of the smoothed changes (not the average of ratios, which a single step with
  a near-zero own change would dominate).
NaN inputs (e.g. a first-order run that logged no ``loss_after``) propagate as NaN, and so do ±inf
inputs (a diverged loss): every per-step quantity is NaN where one of its inputs is not finite.

Averaging per-step changes (:func:`change_summary`, :func:`log_transfer`). Per-step relative changes of
first-order runs are heavy-tailed: on a held-out batch a step may raise the loss by +10 % and the
next lower it by −9.1 % (the same loss again), so the arithmetic mean of the percentages (+0.45 %)
reports a rise where there was none. The mean log-ratio 100·mean(log(L_after/L_before)) has no such
bias: when each step's "before" is the previous step's "after", the logs telescope and the mean is
100·log(L_T/L_0)/T, the real change per step. It is the headline statistic; the arithmetic mean (the
paper's Fig. 3 quantity) and the median are reported beside it. The transfer ratio is
Σ log-change(other) / Σ log-change(own): the other batch's total log change per unit of the own
batch's (1 = a step helps every batch alike, 0 = only its own).
"""

from __future__ import annotations

import numpy as np


DEFAULT_TRANSFER_ATOL = 1e-9


def relative_change_percent(before: object, after: object) -> np.ndarray:
    """100 · (after − before) / before elementwise, NaN where before == 0 or either is NaN. (S,) → (S,)."""
    b, a = _vector(before, "before"), _vector(after, "after")
    if a.shape != b.shape:
        raise ValueError(f"before and after must have the same length, got {b.shape} and {a.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, 100.0 * (a - b) / b, np.nan)


def log_change_percent(before: object, after: object) -> np.ndarray:
    """100 · log(after / before) elementwise (natural log), NaN where either is ≤ 0 or NaN. (S,) → (S,).

    For small changes it equals :func:`relative_change_percent` to first order."""
    b, a = _vector(before, "before"), _vector(after, "after")
    if a.shape != b.shape:
        raise ValueError(f"before and after must have the same length, got {b.shape} and {a.shape}")
    ok = (b > 0) & (a > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, 100.0 * (np.log(np.where(ok, a, 1.0)) - np.log(np.where(ok, b, 1.0))), np.nan)


def change_summary(before: object, after: object) -> dict[str, float]:
    """Averages of the per-step changes of one batch's loss over the steps where both are finite and > 0.

    Returns ``{"log_mean": 100·mean(log(after/before)), "mean": mean of 100·(after − before)/before,
    "median": median of the same, "log_sum": 100·Σ log(after/before), "n": number of steps}`` (%; NaN
    and n = 0 when no step qualifies). Shapes (S,), (S,)."""
    logs, relative = log_change_percent(before, after), relative_change_percent(before, after)
    keep = np.isfinite(logs) & np.isfinite(relative)
    if not keep.any():
        return {"log_mean": np.nan, "mean": np.nan, "median": np.nan, "log_sum": np.nan, "n": 0}
    return {"log_mean": float(logs[keep].mean()), "mean": float(relative[keep].mean()),
            "median": float(np.median(relative[keep])), "log_sum": float(logs[keep].sum()), "n": int(keep.sum())}


def log_transfer(own_log: object, other_log: object, *, atol: float = DEFAULT_TRANSFER_ATOL) -> float:
    """Σ other_log / Σ own_log over the steps where both are finite (per-step log changes in %, e.g. from
    :func:`log_change_percent`); NaN when |Σ own_log| ≤ ``atol`` or no step is finite."""
    o, t = _vector(own_log, "own_log"), _vector(other_log, "other_log")
    if o.shape != t.shape:
        raise ValueError(f"own_log and other_log must have the same length, got {o.shape} and {t.shape}")
    keep = np.isfinite(o) & np.isfinite(t)
    own_total = float(o[keep].sum())
    return float(t[keep].sum()) / own_total if keep.any() and abs(own_total) > atol else np.nan


def transfer_ratio(own: object, other: object, *, atol: float = DEFAULT_TRANSFER_ATOL) -> np.ndarray:
    """other / own elementwise, NaN where |own| ≤ ``atol`` (no own change to compare with). (S,) → (S,)."""
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol >= 0:
        raise ValueError(f"atol must be a non-negative number, got {atol!r}")
    o, t = _vector(own, "own"), _vector(other, "other")
    if o.shape != t.shape:
        raise ValueError(f"own and other must have the same length, got {o.shape} and {t.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.abs(o) > atol, t / o, np.nan)


def default_window(n_steps: int) -> int:
    """max(1, n_steps // 50): about fifty independent windows over a run."""
    return max(1, int(n_steps) // 50)


def moving_average(values: object, window: int | None = None) -> np.ndarray:
    """Trailing NaN-ignoring mean: out[i] = mean of the finite values among values[i−window+1 .. i].

    ``window=None`` uses :func:`default_window`. Shapes (S,) → (S,). O(S) via cumulative sums.
    """
    v = _vector(values, "values")
    if window is None:
        window = default_window(v.size)
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    finite = np.isfinite(v)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, v, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    stop = np.arange(1, v.size + 1)
    start = np.maximum(stop - int(window), 0)
    total, count = sums[stop] - sums[start], counts[stop] - counts[start]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _vector(x: object, name: str) -> np.ndarray:
    """A 1-D float64 vector with NaN for missing steps; ±inf (a diverged loss) is read as NaN, so every
    per-step quantity is NaN where an input is non-finite (:mod:`analysis.nonfinite`)."""
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(getattr(x, "values", x))
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a numeric vector, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per step), got shape {arr.shape}")
    return np.where(np.isinf(arr), np.nan, arr)
