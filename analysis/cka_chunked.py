"""Linear CKA over a probe set processed in row chunks (for representations larger than memory).

:class:`LinearCKAAccumulator` sums, over chunks of rows, the feature-space moments that linear CKA
and its debiased version need (all on rows shifted by a constant c, the first chunk's mean, which
keeps the later subtraction of the mean well conditioned):
    n, s_x = Σ x_i, s_y, XᵀX, YᵀY, XᵀY,
    Σ ‖x_i‖², Σ ‖y_i‖², Σ x_i‖x_i‖², Σ y_i‖y_i‖², Σ x_i‖y_i‖², Σ y_i‖x_i‖², Σ ‖x_i‖⁴, Σ ‖y_i‖⁴, Σ ‖x_i‖²‖y_i‖².
Centred moments follow as XᵀY − s_x s_yᵀ/n; the unbiased HSIC terms of :mod:`analysis.hsic` are
written in these sums (HSIC_1 does not depend on the shift). Memory: O(D1² + D2² + D1·D2).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from analysis.arrays import as_float_matrix, nan_with_warning
from analysis.hsic import MIN_SAMPLES_UNBIASED, LinearPairTerms

CONSTANT_TOLERANCE = 1e-10  # centred trace ≤ this × shifted trace ⇒ the features are constant


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

    def update(self, x_chunk: object, y_chunk: object) -> None:
        """Add rows X_chunk (n, D1), Y_chunk (n, D2) of the same samples."""
        a, b = as_float_matrix(x_chunk, "X chunk"), as_float_matrix(y_chunk, "Y chunk")
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"X and Y chunks must have the same number of rows, got {a.shape[0]} and {b.shape[0]}")
        if self._shift is None:
            self._shift = (a.mean(axis=0), b.mean(axis=0))
        elif a.shape[1] != self._shift[0].size or b.shape[1] != self._shift[1].size:
            raise ValueError(f"chunk features {a.shape[1]}, {b.shape[1]} differ from the first chunk's "
                             f"{self._shift[0].size}, {self._shift[1].size}")
        a, b = a - self._shift[0], b - self._shift[1]
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

    def cka(self, *, debiased: bool = False) -> float:
        """Linear CKA of all rows added so far (biased, or debiased with the unbiased HSIC)."""
        if not isinstance(debiased, bool):
            raise TypeError(f"debiased must be a bool, got {debiased!r}")
        need = MIN_SAMPLES_UNBIASED if debiased else 2
        if self.n < need:
            raise ValueError(f"linear CKA{' (debiased)' if debiased else ''} needs at least {need} samples, got N={self.n}")
        s = self._sums
        centred_xx, centred_yy, centred_xy = self.centred_moments()
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
        """
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


def _dask_row_chunk(x: object) -> int | None:
    chunks = getattr(x, "chunks", None)
    if is_lazy(x) and chunks:
        return int(chunks[0][0])
    return None
