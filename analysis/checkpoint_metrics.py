"""Per-checkpoint metrics of one run: NTK, representations (per layer) and weights (per parameter).

Each function takes the run's lazily loaded ``checkpoints``/``params`` Dataset and reads one
checkpoint at a time, so memory holds at most two checkpoints of one variable (the current one and
the first) — or, for a representation larger than ``max_memory`` bytes, two probe chunks of it.
All outputs are float64 numpy arrays with NaN where a quantity is undefined, was not computed, or
has a non-finite input (:mod:`analysis.nonfinite`; recorded in the ``record`` each function takes).
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from analysis.checkpoint_blocks import CheckpointBlocks
from analysis.cka import linear_cka
from analysis.cka_chunked import LinearCKAAccumulator
from analysis.kernels import alignment, kernel_distance, target_alignment
from analysis.nonfinite import NonFiniteInputs
from analysis.probes import linear_probe_accuracy, linear_probe_r2
from analysis.rank import effective_rank, rank_of_spectrum
from analysis.scaling import max_exponent

FLOAT_BYTES = 8


def checkpoint_reader(array: xr.DataArray, max_memory: int, progress=None) -> CheckpointBlocks:
    """c ↦ float64 numpy of ``array`` at checkpoint c, read in blocks of checkpoints of at most
    ``max_memory`` / 4 bytes (the whole array when it fits; :mod:`analysis.checkpoint_blocks`);
    ``progress(k)`` is told of the checkpoints reached."""
    return CheckpointBlocks(array, max_memory, progress)


def ntk_metrics(ntk: xr.DataArray | None, task: str, targets: np.ndarray, n: int, max_memory: int, *,
                centered: bool = False, record: NonFiniteInputs | None = None,
                progress=None, on_kernel=None) -> dict[str, np.ndarray]:
    """A(Θ_t, Θ_0), 1 − A(Θ_t, Θ_{t−1}) (NaN at t = 0), A(Θ_t, YYᵀ), entropy rank of Θ_t's eigenvalues.

    ``centered``: the three alignments are centred, A(HK₁H, HK₂H) with H = I − 11ᵀ/N (Cortes et al.
    2012; :func:`analysis.kernels.alignment`); the rank is of Θ_t itself either way.

    ``ntk`` (checkpoint, probe, probe_) traced over outputs, or None (all NaN). ``task`` and ``targets``
    (:mod:`dynamics.task`): "classification" with integer labels (N,) — Y their one-hot encoding — or
    "regression" with real targets (N, O) — Y the targets (A(Θ, yyᵀ) for one output).
    Non-finite kernels (:mod:`analysis.nonfinite`): a quantity is NaN where a kernel it uses is not
    finite — Θ_t for all four, Θ_0 for the alignment to init, Θ_{t−1} for the velocity — and is
    recorded in ``record``. ``on_kernel(c, kernel)`` is also given each finite kernel as float64 (N, N),
    e.g. :meth:`analysis.ntk_spectrum.SpectrumMetrics.add`: every stored kernel is read once.
    """
    out = {name: np.full(n, np.nan) for name in
           ("ntk_alignment_init", "ntk_velocity", "ntk_target_alignment", "ntk_effective_rank")}
    if ntk is None or n == 0:
        return out
    if ntk.ndim != 3:
        raise ValueError(f"the stored ntk must have dims (checkpoint, probe, probe_), got {ntk.dims}")
    record = NonFiniteInputs() if record is None else record
    first = previous = None
    read = checkpoint_reader(ntk, max_memory, progress)
    for c in range(n):
        kernel = read(c)
        if not record.check(kernel, "checkpoints/ntk", c):
            previous = None
            continue
        if c == 0:
            first = kernel
        if first is not None:
            out["ntk_alignment_init"][c] = alignment(kernel, first, centered=centered)
        if previous is not None:
            out["ntk_velocity"][c] = kernel_distance(kernel, previous, centered=centered)
        out["ntk_target_alignment"][c] = target_alignment(kernel, targets, task=task, centered=centered)
        out["ntk_effective_rank"][c] = effective_rank(kernel, kind="entropy", matrix="kernel")
        if on_kernel is not None:
            on_kernel(c, kernel)
        previous = kernel
    return out


REPRESENTATION_METRICS = ("cka_init", "rep_effective_rank", "probe_accuracy", "probe_r2")


def representation_metrics(rep: xr.DataArray, task: str, targets: np.ndarray, probe_at: np.ndarray, *,
                           max_memory: int, folds: int, max_iter: int,
                           record: NonFiniteInputs | None = None, progress=None) -> dict[str, np.ndarray]:
    """Linear CKA to the first checkpoint, entropy effective rank, linear probe — for one layer.

    ``rep`` (checkpoint, probe, unit...) lazily loaded; ``probe_at`` (C,) bool marks checkpoints whose
    probe is fitted: for ``task`` "classification" its accuracy (``probe_accuracy``, labels ``targets``
    (N,)), for "regression" its R² (``probe_r2``, targets (N, O)); the other one stays NaN
    (:mod:`analysis.probes`). A checkpoint's representation of more than ``max_memory`` bytes (as
    float64) is processed in probe chunks: CKA through :class:`LinearCKAAccumulator`, the rank from the
    eigenvalues of the centred XᵀX (σ² of the centred X, scale-free); its probe is then NaN (a warning
    says so), since the probe needs the whole matrix in memory. Non-finite representations
    (:mod:`analysis.nonfinite`): the quantities of checkpoint t are NaN where X_t is not finite, CKA to
    init also where X_0 is not; recorded in ``record``.
    """
    n = rep.sizes["checkpoint"]
    out = {name: np.full(n, np.nan) for name in REPRESENTATION_METRICS}
    if n == 0:
        return out
    record = NonFiniteInputs() if record is None else record
    name = f"checkpoints/{rep.name}"
    units = int(np.prod([rep.sizes[d] for d in rep.dims[2:]], dtype=np.int64))
    rows = rep.sizes[rep.dims[1]]
    probe_name = "probe_accuracy" if task == "classification" else "probe_r2"
    if rows * units * FLOAT_BYTES > max_memory:
        _chunked_representation(rep, out, record, name, max(4, max_memory // (2 * FLOAT_BYTES * max(units, 1))))
        if probe_at.any():
            warnings.warn(f"representation {rep.name!r} ({rows}×{units} per checkpoint) exceeds max_memory="
                          f"{max_memory} bytes: its linear probe is not fitted (NaN)", RuntimeWarning, stacklevel=2)
        return out
    first = None
    read = checkpoint_reader(rep, max_memory, progress)
    for c in range(n):
        x = read(c).reshape(rows, units)
        if not record.check(x, name, c):
            continue
        if c == 0:
            first = x
        if first is not None:
            out["cka_init"][c] = linear_cka(x, first)
        out["rep_effective_rank"][c] = effective_rank(x, kind="entropy")
        if probe_at[c]:
            out[probe_name][c] = (linear_probe_accuracy(x, targets, folds=folds, max_iter=max_iter)
                                  if task == "classification" else linear_probe_r2(x, targets, folds=folds))
    return out


def _chunked_representation(rep: xr.DataArray, out: dict[str, np.ndarray], record: NonFiniteInputs, name: str,
                            chunk_rows: int) -> None:
    """CKA to init and effective rank of each checkpoint of ``rep`` from probe chunks of ``chunk_rows``
    rows (two chunks in memory at a time), NaN where a chunk of X_t (or of X_0, for CKA) is not finite."""
    n, rows, probe_dim, units = rep.sizes["checkpoint"], rep.sizes[rep.dims[1]], rep.dims[1], _units(rep)

    def chunk(c: int, start: int) -> np.ndarray:
        window = {probe_dim: slice(start, min(start + chunk_rows, rows))}
        return np.asarray(rep.isel(checkpoint=c, **window).values, dtype=np.float64).reshape(-1, units)

    first_finite = True   # X_0 finite: CKA to init defined
    for c in range(n):
        accumulator = LinearCKAAccumulator()
        for start in range(0, rows, chunk_rows):
            x_chunk = chunk(c, start)
            if not record.check(x_chunk, name, c):
                break
            # with X_0 not finite only the rank is computed (from XᵀX; the Y side is then X itself)
            accumulator.update(x_chunk, chunk(0, start) if c and first_finite else x_chunk)
        else:
            if first_finite:
                out["cka_init"][c] = accumulator.cka()
            out["rep_effective_rank"][c] = rank_of_spectrum(
                np.sqrt(np.maximum(np.linalg.eigvalsh(accumulator.scaled_centred_moments()[0]), 0.0)))
            continue
        first_finite = first_finite and c > 0


def _units(rep: xr.DataArray) -> int:
    return int(np.prod([rep.sizes[d] for d in rep.dims[2:]], dtype=np.int64))


def weight_metrics(history: xr.DataArray, max_memory: int, *, record: NonFiniteInputs | None = None,
                   first_last: bool = False, progress=None) -> dict[str, np.ndarray | float]:
    """Per checkpoint of one parameter (C, ...) read lazily: ``rel`` = ‖θ_t − θ_0‖/‖θ_0‖, ``cos`` =
    cos(θ_t, θ_0), ``delta`` = ‖θ_t − θ_0‖ (each shape (C,)), and ``init_norm`` = ‖θ_0‖ (a float); norms
    are Frobenius norms over all entries of the tensor. A tensor that is all zeros at the first checkpoint
    (``init_norm`` 0, e.g. zero-initialised biases) has ``rel`` and ``cos`` NaN; the caller says so.

    A row that is not finite gives NaN at that checkpoint (every checkpoint when it is θ_0) and is
    recorded in ``record`` — except, with ``first_last`` (a ``params = "first_last"`` store), rows
    between the first and the last checkpoint that are entirely NaN: not stored, by design.
    The pair is divided by the power of two of its largest entry before any product (exact), so
    parameters of 1e±200 neither overflow nor underflow; ``delta`` and ``init_norm`` are scaled back
    (inf only where the norm itself exceeds the float64 range)."""
    n = history.sizes["checkpoint"]
    rel, cos, delta = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    if n == 0:
        return {"rel": rel, "cos": cos, "delta": delta, "init_norm": np.nan}
    record = NonFiniteInputs() if record is None else record
    name = f"params/{history.name}"
    read = checkpoint_reader(history, max_memory, progress)
    init = read(0).ravel()
    if not record.check(init, name, 0):
        return {"rel": rel, "cos": cos, "delta": delta, "init_norm": np.nan}
    init_exponent = max_exponent(init) or 0
    norm0 = _ldexp(float(np.linalg.norm(np.ldexp(init, -init_exponent))), init_exponent)
    for c in range(n):
        theta = read(c).ravel()
        if first_last and 0 < c < n - 1 and np.isnan(theta).all():
            continue   # not stored
        if not record.check(theta, name, c):
            continue
        exponent = max(init_exponent, max_exponent(theta) or 0)
        a, b = np.ldexp(theta, -exponent), np.ldexp(init, -exponent)
        na, nb, nd = float(np.linalg.norm(a)), float(np.linalg.norm(b)), float(np.linalg.norm(a - b))
        delta[c] = _ldexp(nd, exponent)
        if nb > 0:
            rel[c] = nd / nb
            if na > 0:
                cos[c] = float(a @ b) / (na * nb)
    return {"rel": rel, "cos": cos, "delta": delta, "init_norm": norm0}


def _ldexp(value: float, exponent: int) -> float:
    """value · 2^exponent, inf where it exceeds the float64 range (math.ldexp would raise)."""
    with np.errstate(over="ignore"):
        return float(np.ldexp(value, exponent))


def checkpoints_selected(spec: object, n: int) -> np.ndarray:
    """Boolean mask (n,) of the checkpoints named by ``spec``: "all", "last", "ends" (first and last),
    "none", or a sequence of checkpoint indices (negative ones count from the end)."""
    mask = np.zeros(n, dtype=bool)
    if isinstance(spec, str):
        choices = {"all": slice(None), "last": [-1], "ends": [0, -1], "none": []}
        if spec not in choices:
            raise ValueError(f"probe_checkpoints must be one of {sorted(choices)} or a list of indices, got {spec!r}")
        if n:
            mask[choices[spec]] = True
        return mask
    try:
        indices = [int(i) for i in spec]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"probe_checkpoints must be a string or a sequence of ints, got {spec!r}") from None
    for i in indices:
        if not -n <= i < n:
            raise ValueError(f"probe_checkpoints index {i} is out of range for {n} checkpoints")
        mask[i] = True
    return mask
