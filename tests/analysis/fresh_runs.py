"""Run stores for the freshness / interrupted-analysis tests, written through ``dynamics.Recorder``.

``record(path, start, stop, ...)`` trains a small float64 RevMLP with SGD on fixed blobs, logging
``loss``/``loss_after`` every step and storing a checkpoint every ``every`` steps; ``resume=True``
continues (or, after ``truncate``, rewrites) an existing store; ``shift`` perturbs the model so that a
rewritten stretch holds other values.

As a script: ``python fresh_runs.py live STORE`` records 3 checkpoints, prints "ready" and keeps the
store open (locked, status "running") until its stdin is closed.
"""

from __future__ import annotations

import sys

import torch

from analysis import analyze
from dynamics import Recorder
from dynamics.models import RevMLP
from dynamics.schedules import every as every_n

CONFIG = {"optimizer": "sgd", "seed": 0, "model": {"kind": "revmlp"}}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    y = torch.arange(96) % 3
    centres = torch.randn(3, 6, generator=g, dtype=torch.float64) * 2.0
    return centres[y] + torch.randn(96, 6, generator=g, dtype=torch.float64), y


def open_recorder(path, *, resume: bool = False, every: int = 5) -> tuple[Recorder, torch.nn.Module]:
    torch.set_num_threads(1)
    x, y = _data()
    model = RevMLP(6, 8, 2, 3, seed=0, dtype=torch.float64)
    rec = Recorder(path, model, probe=(x[:16], y[:16]), config=CONFIG, schedule=every_n(every), resume=resume)
    return rec, model


def train_steps(rec: Recorder, model: torch.nn.Module, start: int, stop: int, *, shift: float = 0.0,
                every: int = 5) -> None:
    """Steps ``start`` … ``stop`` (checkpoint at multiples of ``every`` not yet stored, the last step
    included; a row for every step before ``stop`` not yet logged)."""
    x, y = _data()
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if shift:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(shift)
    for step in range(start, stop + 1):
        if step % every == 0 and (not rec.checkpoint_steps or step > rec.checkpoint_steps[-1]):
            with torch.no_grad():
                logits = model(x)
                rec.checkpoint(step, epoch=step / 10, train_loss=float(loss_fn(logits, y)),
                               test_acc=float((logits.argmax(1) == y).double().mean()))
        if step == stop:
            break
        batch = slice(16 * (step % 6), 16 * (step % 6) + 16)
        loss = loss_fn(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            after = float(loss_fn(model(x[batch]), y[batch]))
        if rec.last_step is None or step > rec.last_step:
            rec.log(step, epoch=step / 10, loss=float(loss.detach()), loss_after=after)


def record(path, start: int, stop: int, *, resume: bool = False, truncate: int | None = None,
           shift: float = 0.0, every: int = 5):
    """Write (or continue) the store at ``path`` from ``start`` to ``stop``; returns ``path``."""
    rec, model = open_recorder(path, resume=resume, every=every)
    with rec:
        if truncate is not None:
            rec.truncate(truncate)
        train_steps(rec, model, start, stop, shift=shift, every=every)
    return path


if __name__ == "__main__":
    command, store = sys.argv[1], sys.argv[2]
    assert command == "live"
    rec, model = open_recorder(store)
    train_steps(rec, model, 0, 10)
    rec.flush()
    print("ready", flush=True)
    sys.stdin.read()
    rec.close()


def write_legacy_analysis(store):
    """A run store with a one-run analysis written as older versions wrote it: no source token."""
    store = record(store, 0, 10)
    legacy = analyze(store, write=False, probe_checkpoints="none")
    legacy.attrs.pop("source")
    legacy.to_zarr(store, group="analysis", mode="w", consolidated=False, zarr_format=3)
    return store


def resume_keeping_stale_analysis(store, resume):
    """Call ``resume()`` (which continues ``store``; the writer then removes its analysis group) and put
    the analysis of before back, listed in the commit record: the stale state that versions before
    issue 22 left after a resume (and that a restored backup or a copied group still leaves)."""
    import shutil
    from pathlib import Path

    from analysis.store_io import rewrite_root

    store = Path(store)
    saved = store.parent / f"{store.name}-analysis-saved"
    shutil.copytree(store / "analysis", saved)
    resume()
    assert not (store / "analysis").exists()   # removed by the writer before the data changed
    shutil.copytree(saved, store / "analysis")
    shutil.rmtree(saved)
    rewrite_root(store, with_analysis=True)
    return store
