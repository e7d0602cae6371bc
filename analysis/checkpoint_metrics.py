"""Per-checkpoint metrics of one run: NTK, representations (per layer) and weights (per parameter).

Each function takes the run's lazily loaded ``checkpoints``/``params`` Dataset and reads one
checkpoint at a time, so memory holds at most two checkpoints of one variable (the current one and
the first) — or, for a representation larger than ``max_memory`` bytes, two probe chunks of it.
All outputs are float64 numpy arrays with NaN where a quantity is undefined or was not computed.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from analysis.checkpoint_blocks import CheckpointBlocks
from analysis.cka import linear_cka
from analysis.cka_chunked import LinearCKAAccumulator, iter_row_chunks
from analysis.kernels import alignment, kernel_distance, target_alignment
from analysis.probes import linear_probe_accuracy
from analysis.rank import effective_rank, rank_of_spectrum

FLOAT_BYTES = 8


def checkpoint_reader(array: xr.DataArray, max_memory: int, progress=None) -> CheckpointBlocks:
    """c ↦ float64 numpy of ``array`` at checkpoint c, read in blocks of checkpoints of at most
    ``max_memory`` / 4 bytes (the whole array when it fits; :mod:`analysis.checkpoint_blocks`);
    ``progress(k)`` is told of the checkpoints reached."""
    return CheckpointBlocks(array, max_memory, progress)


def ntk_metrics(ntk: xr.DataArray | None, targets: np.ndarray, n: int, max_memory: int, *,
                centered: bool = False, progress=None) -> dict[str, np.ndarray]:
    """A(Θ_t, Θ_0), 1 − A(Θ_t, Θ_{t−1}) (NaN at t = 0), A(Θ_t, YYᵀ), entropy rank of Θ_t's eigenvalues.

    ``centered``: the three alignments are centred, A(HK₁H, HK₂H) with H = I − 11ᵀ/N (Cortes et al.
    2012; :func:`analysis.kernels.alignment`); the rank is of Θ_t itself either way.

    ``ntk`` (checkpoint, probe, probe_) traced over outputs, or None (all NaN). ``targets`` is the
    probe's integer labels (N,) — one-hot Y — or float targets (N, O) used as Y directly.
    """
    out = {name: np.full(n, np.nan) for name in
           ("ntk_alignment_init", "ntk_velocity", "ntk_target_alignment", "ntk_effective_rank")}
    if ntk is None or n == 0:
        return out
    if ntk.ndim != 3:
        raise ValueError(f"the stored ntk must have dims (checkpoint, probe, probe_), got {ntk.dims}")
    target_kernel = targets @ targets.T if targets.ndim == 2 else None
    first = previous = None
    read = checkpoint_reader(ntk, max_memory, progress)
    for c in range(n):
        kernel = read(c)
        if not np.all(np.isfinite(kernel)):
            warnings.warn(f"the NTK of checkpoint {c} has non-finite entries; its metrics are NaN", RuntimeWarning,
                          stacklevel=2)
            previous = None
            continue
        first = kernel if first is None else first
        out["ntk_alignment_init"][c] = alignment(kernel, first, centered=centered)
        if previous is not None:
            out["ntk_velocity"][c] = kernel_distance(kernel, previous, centered=centered)
        out["ntk_target_alignment"][c] = (target_alignment(kernel, targets, centered=centered)
                                          if target_kernel is None else alignment(kernel, target_kernel,
                                                                                  centered=centered))
        out["ntk_effective_rank"][c] = effective_rank(kernel, kind="entropy", matrix="kernel")
        previous = kernel
    return out


def representation_metrics(rep: xr.DataArray, labels: np.ndarray, probe_at: np.ndarray, *, max_memory: int,
                           folds: int, max_iter: int, progress=None) -> dict[str, np.ndarray]:
    """Linear CKA to the first checkpoint, entropy effective rank, probe accuracy — for one layer.

    ``rep`` (checkpoint, probe, unit...) lazily loaded; ``probe_at`` (C,) bool marks checkpoints whose
    probe accuracy is computed. A checkpoint's representation of more than ``max_memory`` bytes
    (as float64) is processed in probe chunks: CKA through :class:`LinearCKAAccumulator`, the rank
    from the eigenvalues of the centred XᵀX (σ² of the centred X); its probe accuracy is then NaN
    (a warning says so), since the probe needs the whole matrix in memory.
    """
    n = rep.sizes["checkpoint"]
    out = {name: np.full(n, np.nan) for name in ("cka_init", "rep_effective_rank", "probe_accuracy")}
    if n == 0:
        return out
    units = int(np.prod([rep.sizes[d] for d in rep.dims[2:]], dtype=np.int64))
    rows = rep.sizes[rep.dims[1]]
    chunked = rows * units * FLOAT_BYTES > max_memory
    if chunked:
        chunk_rows = max(4, max_memory // (2 * FLOAT_BYTES * max(units, 1)))
        first = rep.isel(checkpoint=0)
        for c in range(n):
            accumulator = LinearCKAAccumulator()
            for x_chunk, y_chunk in iter_row_chunks(rep.isel(checkpoint=c), first, chunk_rows):
                accumulator.update(x_chunk, y_chunk)
            out["cka_init"][c] = accumulator.cka()
            centred_xx = accumulator.centred_moments()[0]
            out["rep_effective_rank"][c] = rank_of_spectrum(np.sqrt(np.maximum(np.linalg.eigvalsh(centred_xx), 0.0)))
        if probe_at.any():
            warnings.warn(f"representation {rep.name!r} ({rows}×{units} per checkpoint) exceeds max_memory="
                          f"{max_memory} bytes: probe accuracy is not computed (NaN)", RuntimeWarning, stacklevel=2)
        return out
    first = None
    read = checkpoint_reader(rep, max_memory, progress)
    for c in range(n):
        x = read(c).reshape(rows, units)
        first = x if first is None else first
        out["cka_init"][c] = linear_cka(x, first)
        out["rep_effective_rank"][c] = effective_rank(x, kind="entropy")
        if probe_at[c]:
            out["probe_accuracy"][c] = linear_probe_accuracy(x, labels, folds=folds, max_iter=max_iter)
    return out


def weight_metrics(history: xr.DataArray, max_memory: int, progress=None) -> dict[str, np.ndarray | float]:
    """Per checkpoint of one parameter (C, ...) read lazily: ``rel`` = ‖θ_t − θ_0‖/‖θ_0‖, ``cos`` =
    cos(θ_t, θ_0), ``delta`` = ‖θ_t − θ_0‖ (each shape (C,)), and ``init_norm`` = ‖θ_0‖ (a float); norms
    are Frobenius norms over all entries of the tensor. A tensor that is all zeros at the first checkpoint
    (``init_norm`` 0, e.g. zero-initialised biases) has ``rel`` and ``cos`` NaN; the caller says so."""
    n = history.sizes["checkpoint"]
    rel, cos, delta = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    if n == 0:
        return {"rel": rel, "cos": cos, "delta": delta, "init_norm": np.nan}
    read = checkpoint_reader(history, max_memory, progress)
    init = read(0).ravel()
    norm0 = float(np.linalg.norm(init))
    for c in range(n):
        theta = read(c).ravel()
        norm = float(np.linalg.norm(theta))
        delta[c] = np.linalg.norm(theta - init)
        if norm0 > 0:
            rel[c] = delta[c] / norm0
            if norm > 0:
                cos[c] = float(theta @ init) / (norm * norm0)
    return {"rel": rel, "cos": cos, "delta": delta, "init_norm": norm0}


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
