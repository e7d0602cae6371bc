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
NaN inputs (e.g. a first-order run that logged no ``loss_after``) propagate as NaN.
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
    """A 1-D float64 vector that may contain NaN (missing steps), but no infinities."""
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(getattr(x, "values", x))
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a numeric vector, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per step), got shape {arr.shape}")
    if np.any(np.isinf(arr)):
        raise ValueError(f"{name} contains infinite values")
    return arr
