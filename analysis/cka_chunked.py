"""Linear CKA over a probe set processed in row chunks (for representations larger than memory).

:class:`LinearCKAAccumulator` sums, over chunks of rows, the feature-space moments that linear CKA
and its debiased version need (all on rows shifted by a constant c, the first chunk's mean, which
keeps the later subtraction of the mean well conditioned):
    n, s_x = Σ x_i, s_y, XᵀX, YᵀY, XᵀY,
    Σ ‖x_i‖², Σ ‖y_i‖², Σ x_i‖x_i‖², Σ y_i‖y_i‖², Σ x_i‖y_i‖², Σ y_i‖x_i‖², Σ ‖x_i‖⁴, Σ ‖y_i‖⁴, Σ ‖x_i‖²‖y_i‖².
Centred moments follow as XᵀY − s_x s_yᵀ/n; the unbiased HSIC terms of :mod:`analysis.hsic` are
written in these sums (HSIC_1 does not depend on the shift). Memory: O(D1² + D2² + D1·D2).

Scale: the sums are kept for X·2^−ex and Y·2^−ey, with ex (ey) the binary exponent of the largest
shifted entry of X (Y) seen so far (:mod:`analysis.scaling`); when a chunk brings a larger entry,
every stored sum is rescaled exactly by the matching power of two (a sum of degree p in X by
2^(−p·Δ)). CKA is a ratio in which these factors cancel, so it is computed from the scaled sums and
neither overflows nor underflows, whatever the scale of the data or of individual chunks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from analysis.arrays import as_float_matrix, nan_with_warning
from analysis.hsic import MIN_SAMPLES_UNBIASED, LinearPairTerms
from analysis.scaling import max_exponent

CONSTANT_TOLERANCE = 1e-10  # centred trace ≤ this × shifted trace ⇒ the features are constant
#: Degree in X and in Y of each accumulated sum (how it scales when X, Y are multiplied by 2^e).
DEGREES = {"s_x": (1, 0), "s_y": (0, 1), "xx": (2, 0), "yy": (0, 2), "xy": (1, 1), "t_x": (2, 0), "t_y": (0, 2),
           "u_x": (3, 0), "u_y": (0, 3), "v_xy": (1, 2), "v_yx": (2, 1), "q_xx": (4, 0), "q_yy": (0, 4),
           "q_xy": (2, 2)}


def is_lazy(x: object) -> bool:
    """True for dask arrays and dask-backed xarray objects (which must not be loaded whole)."""
    data = getattr(x, "data", x)
    return type(data).__module__.startswith("dask")


def iter_row_chunks(x: object, y: object, chunk_size: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield matching float64 row blocks (X[i:j], Y[i:j]); only one block is loaded at a time.

    ``chunk_size=None`` uses the first row chunk of a dask-backed input (else all rows at once).
    """
    n_x, n_y = row_count(x, "X"), row_count(y, "Y")
    if n_x != n_y:
        raise ValueError(f"X and Y must have the same number of samples, got {n_x} and {n_y}")
    if chunk_size is None:
        chunk_size = _dask_row_chunk(x) or _dask_row_chunk(y) or max(n_x, 1)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    for start in range(0, n_x, int(chunk_size)):
        stop = min(start + int(chunk_size), n_x)
        yield as_float_matrix(x[start:stop], "X"), as_float_matrix(y[start:stop], "Y")


class LinearCKAAccumulator:
    """Accumulates row chunks of X (N, D1), Y (N, D2); :meth:`cka` then equals ``linear_cka(X, Y)``."""

    def __init__(self) -> None:
        self.n = 0
        self._shift: tuple[np.ndarray, np.ndarray] | None = None
        self._sums: dict[str, np.ndarray | float] = {}
        self._exponents: list[int | None] = [None, None]  # ex, ey: sums are of X·2^−ex, Y·2^−ey

    def update(self, x_chunk: object, y_chunk: object) -> None:
        """Add rows X_chunk (n, D1), Y_chunk (n, D2) of the same samples."""
        a, b = as_float_matrix(x_chunk, "X chunk"), as_float_matrix(y_chunk, "Y chunk")
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"X and Y chunks must have the same number of rows, got {a.shape[0]} and {b.shape[0]}")
        if self._shift is None:
            self._shift = (_mean(a), _mean(b))
        elif a.shape[1] != self._shift[0].size or b.shape[1] != self._shift[1].size:
            raise ValueError(f"chunk features {a.shape[1]}, {b.shape[1]} differ from the first chunk's "
                             f"{self._shift[0].size}, {self._shift[1].size}")
        a, b = a - self._shift[0], b - self._shift[1]
        for side, chunk in enumerate((a, b)):
            exponent, current = max_exponent(chunk), self._exponents[side]
            if exponent is not None and (current is None or exponent > current):
                if current is not None:
                    self._rescale(side, exponent - current)
                self._exponents[side] = exponent
        a, b = np.ldexp(a, -(self._exponents[0] or 0)), np.ldexp(b, -(self._exponents[1] or 0))
        norms_a, norms_b = np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b)
        terms = {
            "s_x": a.sum(axis=0), "s_y": b.sum(axis=0), "xx": a.T @ a, "yy": b.T @ b, "xy": a.T @ b,
            "t_x": norms_a.sum(), "t_y": norms_b.sum(), "u_x": a.T @ norms_a, "u_y": b.T @ norms_b,
            "v_xy": a.T @ norms_b, "v_yx": b.T @ norms_a, "q_xx": norms_a @ norms_a, "q_yy": norms_b @ norms_b,
            "q_xy": norms_a @ norms_b,
        }
        for key, value in terms.items():
            self._sums[key] = self._sums[key] + value if key in self._sums else value
        self.n += a.shape[0]

    def _rescale(self, side: int, shift: int) -> None:
        """Divide every stored sum by 2^(degree·shift) in X (side 0) or Y (side 1): exact."""
        for key, value in self._sums.items():
            degree = DEGREES[key][side]
            if degree:
                self._sums[key] = np.ldexp(value, -degree * shift)

    def cka(self, *, debiased: bool = False) -> float:
        """Linear CKA of all rows added so far (biased, or debiased with the unbiased HSIC)."""
        if not isinstance(debiased, bool):
            raise TypeError(f"debiased must be a bool, got {debiased!r}")
        need = MIN_SAMPLES_UNBIASED if debiased else 2
        if self.n < need:
            raise ValueError(f"linear CKA{' (debiased)' if debiased else ''} needs at least {need} samples, got N={self.n}")
        s = self._sums
        centred_xx, centred_yy, centred_xy = self.scaled_centred_moments()
        for name, centred, shifted in (("X", centred_xx, s["t_x"]), ("Y", centred_yy, s["t_y"])):
            if not np.trace(centred) > CONSTANT_TOLERANCE * shifted:
                return nan_with_warning(f"linear CKA is undefined: {name} is constant over the samples")
        if debiased:
            hsic = [self._pair(p).unbiased_hsic() for p in ("xy", "xx", "yy")]
        else:
            hsic = [np.sum(centred_xy ** 2), np.sum(centred_xx ** 2), np.sum(centred_yy ** 2)]
        if not hsic[1] > 0.0 or not hsic[2] > 0.0:
            which = "X" if not hsic[1] > 0.0 else "Y"
            return nan_with_warning(f"linear CKA is undefined: HSIC({which}, {which}) is not positive")
        return float(hsic[0] / np.sqrt(hsic[1] * hsic[2]))

    def centred_moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centred XᵀX (D1, D1), YᵀY (D2, D2) and XᵀY (D1, D2) of all rows added so far.

        The eigenvalues of the centred XᵀX are the squared singular values of the column-centred X.
        In the data's own units (entries overflow to inf where the true values exceed float64).
        """
        ex, ey = self._exponents[0] or 0, self._exponents[1] or 0
        xx, yy, xy = self.scaled_centred_moments()
        return np.ldexp(xx, 2 * ex), np.ldexp(yy, 2 * ey), np.ldexp(xy, ex + ey)

    def scaled_centred_moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The centred moments of X·2^−ex and Y·2^−ey (what CKA is computed from; scale-free statistics such
        as effective ranks use them too: the unscaled ones overflow at features of 1e160)."""
        if self.n == 0:
            raise ValueError("no rows were added to the accumulator")
        s, n = self._sums, self.n
        return (s["xx"] - np.outer(s["s_x"], s["s_x"]) / n, s["yy"] - np.outer(s["s_y"], s["s_y"]) / n,
                s["xy"] - np.outer(s["s_x"], s["s_y"]) / n)

    def _pair(self, pair: str) -> LinearPairTerms:
        """HSIC_1 terms of (X, Y), (X, X) or (Y, Y) from the accumulated sums (shifted rows)."""
        s = self._sums
        left, right = pair[0], pair[1]
        cross = s[pair] if pair != "yx" else s["xy"].T
        v_left = s[f"v_{left}{right}"] if left != right else s[f"u_{left}"]
        v_right = s[f"v_{right}{left}"] if left != right else s[f"u_{left}"]
        q = s[f"q_{left}{right}"]
        s_l, s_r = s[f"s_{left}"], s[f"s_{right}"]
        row_sums = float(s_l @ cross @ s_r - s_l @ v_left - s_r @ v_right + q)
        return LinearPairTerms(
            n=self.n, frobenius=float(np.sum(cross ** 2)), diagonal=float(q),
            offdiag_sum_a=float(s_l @ s_l - s[f"t_{left}"]), offdiag_sum_b=float(s_r @ s_r - s[f"t_{right}"]),
            row_sums=row_sums,
        )


def row_count(x: object, name: str) -> int:
    """Length of the sample (first) dimension of ``x``; TypeError naming ``name`` if it has none."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) == 0:
        raise TypeError(f"{name} must be an array with a sample dimension, got {type(x).__name__}")
    return int(shape[0])


def _mean(a: np.ndarray) -> np.ndarray:
    """Column means of A (n, D), computed on A / 2^e so that the sum cannot overflow."""
    exponent = max_exponent(a) or 0
    return np.ldexp(np.ldexp(a, -exponent).mean(axis=0), exponent)


def _dask_row_chunk(x: object) -> int | None:
    chunks = getattr(x, "chunks", None)
    if is_lazy(x) and chunks:
        return int(chunks[0][0])
    return None
