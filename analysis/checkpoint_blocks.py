"""Reading one variable of a run, checkpoint after checkpoint, in blocks of checkpoints.

The per-checkpoint metrics (:mod:`analysis.checkpoint_metrics`) visit the checkpoints of a variable
in order and hold one (plus the first and the previous) in memory. Reading each checkpoint with its
own store request costs one zarr request per checkpoint and decodes the whole stored chunk around it
every time: a chunk holds up to 256 KiB of rows (:func:`dynamics.store.schema.checkpoint_chunk_rows`,
e.g. 16 checkpoints of a 64×64 float32 NTK), so each chunk was decoded once per checkpoint in it.
On a store of 10,000 checkpoints that made the analysis' time per checkpoint jump by half once a
variable no longer fitted the whole-array budget (measured in ``benchmarks/analyze_scaling.py``).

:class:`CheckpointBlocks` reads a block of consecutive checkpoints per request instead: as many as fit
in ``max_memory / 4`` bytes as float64 (the whole variable when it fits, as before), rounded down to
whole stored chunks, so each chunk is decoded once and the requests number ⌈n / block⌉. Memory then
holds one block (≤ ``max_memory / 4``) besides what the caller keeps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import xarray as xr

FLOAT_BYTES = 8


def stored_chunk_rows(array: xr.DataArray) -> int:
    """Checkpoints per stored chunk of ``array`` (its zarr encoding; 1 when unknown)."""
    chunks = array.encoding.get("chunks")
    try:
        return max(1, int(chunks[0]))
    except (TypeError, IndexError, ValueError):
        return 1


def block_rows(array: xr.DataArray, max_memory: int) -> int:
    """Checkpoints read per request: all of them when the variable takes at most ``max_memory`` / 4
    bytes as float64, else as many as fit, rounded down to whole stored chunks (at least one)."""
    n = array.sizes["checkpoint"]
    row_bytes = max(1, int(np.prod(array.shape[1:], dtype=np.int64)) * FLOAT_BYTES)
    fit = max(1, (max_memory // 4) // row_bytes)
    if fit >= n:
        return max(n, 1)
    chunk = stored_chunk_rows(array)
    return fit - fit % chunk if fit >= chunk else fit


class CheckpointBlocks:
    """``reader(c)`` → float64 numpy array of ``array`` (dims: checkpoint first) at checkpoint ``c``.

    Reads :func:`block_rows` checkpoints per store request (``requests`` counts them). ``progress``,
    if given, is called with the number of checkpoints reached for the first time (the callers visit
    0, 1, …, n − 1), so a progress bar advances with the work, not with the reads."""

    def __init__(self, array: xr.DataArray, max_memory: int,
                 progress: Callable[[int], object] | None = None) -> None:
        self.array, self.n = array, array.sizes["checkpoint"]
        self.block = block_rows(array, max_memory)
        self.progress = progress
        self.requests = 0
        self._start, self._values = 0, np.empty((0,) + tuple(array.shape[1:]))
        self._reached = 0

    def __call__(self, c: int) -> np.ndarray:
        if not 0 <= c < self.n:
            raise IndexError(f"checkpoint {c} is out of range for {self.n} checkpoints")
        if not self._start <= c < self._start + len(self._values):
            self._start = (c // self.block) * self.block
            stop = min(self.n, self._start + self.block)
            self._values = np.empty((0,) + tuple(self.array.shape[1:]))   # released before the next read
            self._values = np.asarray(self.array.isel(checkpoint=slice(self._start, stop)).values,
                                      dtype=np.float64)
            self.requests += 1
        if self.progress is not None and c + 1 > self._reached:
            self.progress(c + 1 - self._reached)
            self._reached = c + 1
        return self._values[c - self._start]
