"""A run store of any number of checkpoints, written in seconds: the writer's own layout, filled in blocks.

Training a store of 10,000 checkpoints through the ``Recorder`` takes minutes (each checkpoint is one
commit); a benchmark of the *reader* side needs only a store with the same files. :func:`build_store`
creates the store with :class:`dynamics.store.RunWriter` (root, probe, coordinates), then writes every
row array at once with :class:`dynamics.store.chunks.RowArray` — the writer's own array class, chunk
sizes (:func:`dynamics.store.schema.checkpoint_chunk_rows`) and CF attributes — and commits them with
the writer's commit record (:mod:`dynamics.store.root`), so ``dynamics.open_run`` reads it with all
its checks (documents against the commit record, every chunk file present).

Contents (float32 like a float32 model's store; a seeded generator, so the same arguments give the
same bytes): ``probe`` points with 10 classes; per checkpoint an NTK A·Aᵀ whose factor drifts from
checkpoint to checkpoint, ``layers`` representations (probe × ``units``) and ``params`` 32×32
parameter tensors, both drifting; ``steps_per_checkpoint`` metrics rows between checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dynamics.store import RunWriter, schema
from dynamics.store import root as root_record
from dynamics.store.attributes import cf_attrs
from dynamics.store.chunks import RowArray

BLOCK = 512   # checkpoints generated and written at once (bounds memory for any store size)
METRICS = ("loss", "loss_after", "other_loss", "other_loss_after")


def _blocks(n: int):
    for start in range(0, n, BLOCK):
        yield start, min(n, start + BLOCK)


def build_store(path: Path, checkpoints: int, *, probe: int = 64, units: int = 32, layers: int = 3,
                params: int = 4, steps_per_checkpoint: int = 2, seed: int = 0) -> Path:
    """Write a "complete" run store of ``checkpoints`` checkpoints at ``path`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    probe_x = rng.standard_normal((probe, 40)).astype(np.float32)
    probe_y = (np.arange(probe) % 10).astype(np.int64)
    RunWriter.create(path, config={"optimizer": "sgd", "seed": seed, "synthetic": True}, probe_x=probe_x,
                     probe_y=probe_y, attrs={"optimizer": "sgd", "seed": seed}).close("complete")
    n, rows = checkpoints, checkpoints * steps_per_checkpoint
    ck_steps = np.arange(n, dtype=np.int64) * steps_per_checkpoint
    factor = rng.standard_normal((probe, 8)).astype(np.float32)
    reps = [rng.standard_normal((probe, units)).astype(np.float32) for _ in range(layers)]
    thetas = [rng.standard_normal((32, 32)).astype(np.float32) for _ in range(params)]

    def array(group: str, name: str, dims: tuple, per_row: tuple, dtype) -> RowArray:
        row_bytes = int(np.prod(per_row, dtype=np.int64)) * np.dtype(dtype).itemsize
        chunk = schema.METRICS_CHUNK if group == "metrics" else schema.checkpoint_chunk_rows(row_bytes)
        return RowArray.create(path / group / name, dims, (n if group != "metrics" else rows,) + per_row, chunk,
                               dtype, cf_attrs(group, name))

    variables = {"metrics": ["step", "epoch", *METRICS], "checkpoints": list(schema.CHECKPOINT_COORDS),
                 "params": list(schema.CHECKPOINT_COORDS)}
    steps = np.arange(1, rows + 1, dtype=np.int64)
    array("metrics", "step", ("step",), (), np.int64).write_rows(0, steps)
    array("metrics", "epoch", ("step",), (), np.float64).write_rows(0, steps / 100.0)
    for name in METRICS:
        array("metrics", name, ("step",), (), np.float64).write_rows(0, 2.0 + rng.random(rows))
    for group in ("checkpoints", "params"):
        array(group, "checkpoint", ("checkpoint",), (), np.int64).write_rows(0, np.arange(n, dtype=np.int64))
        array(group, "checkpoint_step", ("checkpoint",), (), np.int64).write_rows(0, ck_steps)
        array(group, "checkpoint_epoch", ("checkpoint",), (), np.float64).write_rows(0, ck_steps / 100.0)
    for name in ("train_loss", "test_acc"):
        array("checkpoints", name, ("checkpoint",), (), np.float64).write_rows(0, rng.random(n))
        variables["checkpoints"].append(name)
    ntk = array("checkpoints", "ntk", ("checkpoint", "probe", "probe_"), (probe, probe), np.float32)
    rep_arrays = [array("checkpoints", f"rep_b{j}", ("checkpoint", "probe", f"unit_b{j}"), (probe, units),
                        np.float32) for j in range(layers)]
    param_arrays = [array("params", f"w{j}", ("checkpoint", f"w{j}_0", f"w{j}_1"), (32, 32), np.float32)
                    for j in range(params)]
    variables["checkpoints"] += ["ntk"] + [f"rep_b{j}" for j in range(layers)]
    variables["params"] += [f"w{j}" for j in range(params)]
    for start, stop in _blocks(n):
        k = stop - start
        drift = rng.standard_normal((k, probe, 8)).astype(np.float32) * 0.01
        factors = factor + np.cumsum(drift, axis=0)
        factor = factors[-1]
        ntk.write_rows(start, factors @ factors.transpose(0, 2, 1))
        for j, target in enumerate(rep_arrays):
            block = reps[j] + np.cumsum(rng.standard_normal((k, probe, units)).astype(np.float32) * 0.01, axis=0)
            reps[j] = block[-1]
            target.write_rows(start, block)
        for j, target in enumerate(param_arrays):
            block = thetas[j] + np.cumsum(rng.standard_normal((k, 32, 32)).astype(np.float32) * 0.001, axis=0)
            thetas[j] = block[-1]
            target.write_rows(start, block)
    committed = {"metrics": rows, "step": int(steps[-1]) if rows else None, "checkpoint": n,
                 "checkpoint_step": int(ck_steps[-1]) if n else None, "variables": variables}
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]
    attrs["committed"] = json.dumps(committed)
    view = root_record.committed_view(root_record.read_nodes(path), committed)
    root_record.write_root(path, root_record.root_document(attrs, view))
    return path
