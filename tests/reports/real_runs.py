"""Experiment folders made by short real training runs (trainers.train on the bundled digits data):
a few seconds each, with every store variable the report reads."""

from __future__ import annotations

from pathlib import Path

from trainers import store_name, train
from trainers.config import load_config

TINY = {"data": {"n_train": 160, "n_test": 60, "probe_size": 48},
        "model": {"hidden": 16, "depth": 2},
        "train": {"steps": 8, "batch_size": 16, "checkpoints": 3}}


def tiny_config(name: str = "tiny", **tables):
    """The digits preset shrunk to :data:`TINY`, with ``tables`` merged over it (e.g. data={...})."""
    overrides = {f"{table}.{key}": value for table, values in TINY.items() for key, value in values.items()}
    overrides |= {f"{table}.{key}": value for table, values in tables.items() for key, value in values.items()}
    return load_config("digits", overrides={"name": name, **overrides})


def real_experiment(root: Path, optimizers=("sgd", "adam"), seeds=(0,), config=None) -> Path:
    """Train every (seed, optimiser) of ``config`` (default :func:`tiny_config`) into ``root``."""
    config = config or tiny_config()
    root.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for optimizer in optimizers:
            train(config, optimizer, root / store_name(optimizer, seed, len(seeds)), seed=seed, progress=False)
    return root


def recorded_run(path: Path, config: dict, steps: int = 6, seed: int = 0) -> Path:
    """A run of the user's own loop (SGD on a RevMLP, 3 Gaussian classes) recorded with
    :class:`dynamics.Recorder` under the free-form ``config`` (any text, e.g. markup in names)."""
    import torch

    from dynamics import Recorder
    from dynamics.models import RevMLP
    from dynamics.schedules import every

    gen = torch.Generator().manual_seed(7)
    labels = torch.arange(72) % 3
    x = torch.randn(3, 8, generator=gen, dtype=torch.float64)[labels] + 0.7 * torch.randn(72, 8, generator=gen,
                                                                                           dtype=torch.float64)
    model = RevMLP(8, 16, 2, 3, seed=seed, dtype=torch.float64)
    sgd, ce = torch.optim.SGD(model.parameters(), lr=0.2), torch.nn.CrossEntropyLoss()

    def evaluate():
        with torch.no_grad():
            train, test = model(x[:48]), model(x[48:])
        return dict(train_loss=float(ce(train, labels[:48])), test_loss=float(ce(test, labels[48:])),
                    train_acc=float((train.argmax(1) == labels[:48]).double().mean()),
                    test_acc=float((test.argmax(1) == labels[48:]).double().mean()))

    with Recorder(path, model, probe=(x[48:], labels[48:]), config=config, schedule=every(3)) as rec:
        for step in range(steps):
            if step % 3 == 0:
                rec.checkpoint(step, **evaluate())
            xb, yb = x[(step * 8) % 48:][:8], labels[(step * 8) % 48:][:8]
            with torch.no_grad():
                other_before = float(ce(model(x[48:56]), labels[48:56]))
            out = ce(model(xb), yb)
            sgd.zero_grad()
            out.backward()
            sgd.step()
            with torch.no_grad():
                after, other_after = float(ce(model(xb), yb)), float(ce(model(x[48:56]), labels[48:56]))
            rec.log(step, loss=out.item(), loss_after=after, other_loss=other_before, other_loss_after=other_after)
        rec.checkpoint(steps, **evaluate())
    return path
