"""Benchmark: time per checkpoint of ``analysis.analyze`` as a store grows to 10,000 checkpoints.

    python benchmarks/analyze_scaling.py [--sizes 1000,2000,4000,10000] [--quick]

Stores are written by :mod:`synthetic_store` (the writer's layout, filled in blocks: seconds instead
of the minutes a Recorder takes for 10,000 commits): a float32 NTK of 64 probes, 3 representations
of 64×32 and 4 parameter tensors of 32×32 per checkpoint, 2 metrics rows between checkpoints.

For each size it prints the wall time and the time per checkpoint of

- ``open_run`` (the committed view of the store, lazily);
- ``analyze`` without linear probes (every other metric; no write): the part whose cost depends on
  how checkpoints are read. Time per checkpoint roughly constant = linear scaling;
- the same analysis with the reader it had before (the baseline of this run): a variable within the
  whole-array budget (``max_memory`` / 4 = 256 MiB as float64) read at once, a larger one with one
  store request per checkpoint, each decoding the whole chunk around it; the NTK of 10,000
  checkpoints (327 MB as float64) is past that budget;
- the NTK's checkpoints alone read one store request each against blocks of checkpoints
  (:class:`analysis.checkpoint_blocks.CheckpointBlocks`, what the analysis does now).

Linear probes (a cross-validated logistic regression per layer and checkpoint) cost the same at every
size; their time per checkpoint is measured once, on the smallest store (``--probe-checkpoints``
of them), and added as a line.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from analysis import analyze
from analysis.checkpoint_blocks import CheckpointBlocks
from analysis.run_analysis import DEFAULT_MAX_MEMORY
from dynamics import open_run
from environment import environment_line
from synthetic_store import build_store


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def previous_reader(array, max_memory: int, progress=None):
    """The reader of the analysis before blocks: whole array within ``max_memory`` / 4, else one store
    request per checkpoint."""
    if array.size * 8 <= max_memory // 4:
        whole = np.asarray(array.values, dtype=np.float64)
        return lambda c: whole[c]
    return lambda c: np.asarray(array.isel(checkpoint=c).values, dtype=np.float64)


def analyze_with_previous_reader(path: Path) -> float:
    from analysis import checkpoint_metrics
    with mock.patch.object(checkpoint_metrics, "checkpoint_reader", previous_reader):
        return timed(lambda: analyze(path, probe_checkpoints="none", write=False, progress="off"))


def per_checkpoint_reads(path: Path) -> float:
    """Every NTK checkpoint read with its own store request (the old reader past its budget)."""
    ntk = open_run(path, analysis="omit")["checkpoints"]["ntk"]
    start = time.perf_counter()
    for c in range(ntk.sizes["checkpoint"]):
        np.asarray(ntk.isel(checkpoint=c).values, dtype=np.float64)
    return time.perf_counter() - start


def block_reads(path: Path, max_memory: int) -> tuple[float, int]:
    """Every NTK checkpoint through :class:`CheckpointBlocks` with ``max_memory``: (time, requests)."""
    ntk = open_run(path, analysis="omit")["checkpoints"]["ntk"]
    start = time.perf_counter()
    reader = CheckpointBlocks(ntk, max_memory)
    for c in range(ntk.sizes["checkpoint"]):
        reader(c)
    return time.perf_counter() - start, reader.requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,4000,10000", help="checkpoint counts (comma-separated)")
    parser.add_argument("--quick", action="store_true", help="sizes 250,500,1000")
    parser.add_argument("--probe-checkpoints", type=int, default=50,
                        help="checkpoints of the smallest store whose linear probes are timed (default 50)")
    args = parser.parse_args()
    sizes = [250, 500, 1000] if args.quick else [int(s) for s in args.sizes.split(",")]
    print(environment_line())
    print("store: NTK 64x64, 3 representations 64x32, 4 tensors 32x32 per checkpoint (float32)")
    header = (f"{'checkpoints':>11}{'build [s]':>11}{'open [s]':>10}{'analyze [s]':>13}{'ms/ckpt':>9}"
              f"{'vs first':>10}{'before [s]':>12}{'ms/ckpt':>9}{'ntk 1/req [s]':>15}{'ntk blocks [s]':>16}"
              f"{'requests':>10}")
    print(header)
    first = None
    probe_ms = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"run-{n}.zarr"
            t_build = timed(lambda: build_store(path, n))
            t_open = timed(lambda: open_run(path, analysis="omit"))
            if first is None:
                analyze(path, probe_checkpoints="none", write=False, progress="off")   # warm-up: imports
            t_analyze = timed(lambda: analyze(path, probe_checkpoints="none", write=False, progress="off"))
            per = 1e3 * t_analyze / n
            first = per if first is None else first
            t_before = analyze_with_previous_reader(path)
            t_single = per_checkpoint_reads(path)
            t_blocks, requests = block_reads(path, DEFAULT_MAX_MEMORY)
            print(f"{n:>11}{t_build:>11.1f}{t_open:>10.2f}{t_analyze:>13.2f}{per:>9.2f}{per / first:>9.2f}x"
                  f"{t_before:>12.2f}{1e3 * t_before / n:>9.2f}{t_single:>15.2f}{t_blocks:>16.2f}{requests:>10}",
                  flush=True)
            if probe_ms is None:
                k = min(args.probe_checkpoints, n)
                with_probes = timed(lambda: analyze(path, probe_checkpoints=list(range(k)), write=False,
                                                    progress="off"))
                probe_ms = 1e3 * (with_probes - t_analyze) / k
    print(f"linear probes (3 layers, 3-fold CV) add {probe_ms:.1f} ms per checkpoint at every size "
          f"(probe_checkpoints='all', the default: {probe_ms * sizes[-1] / 1e3:.0f} s for {sizes[-1]} checkpoints)")


if __name__ == "__main__":
    main()
