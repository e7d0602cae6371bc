"""Tiny real run stores written through the Recorder (seconds), for the export, notebook and watch tests."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dynamics import Recorder
from dynamics.models import MLP
from dynamics.schedules import every


def tiny_data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 6, generator=gen, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return x, y


def train_tiny(path: Path, optimizer: str = "sgd", steps: int = 12, seed: int = 0, checkpoint_every: int = 4) -> Path:
    """Train a small MLP with SGD or Adam for ``steps`` steps, logging the metrics the analysis reads
    (loss, loss_after, other_loss(_after), next_loss(_after)) and checkpointing every ``checkpoint_every``
    steps with train/test loss and accuracy."""
    for _ in tiny_training(path, optimizer, steps, seed, checkpoint_every):
        pass
    return path


def tiny_training(path: Path, optimizer: str = "sgd", steps: int = 12, seed: int = 0, checkpoint_every: int = 4,
                  flush: bool = False):
    """:func:`train_tiny` as a generator yielding each step once it is done (0: the first checkpoint),
    with every write finished first when ``flush`` (the store is quiet at each yield)."""
    x, y = tiny_data(seed)
    train, test = (x[:64], y[:64]), (x[64:], y[64:])
    model = MLP(6, 12, 2, 3, seed=seed, dtype=torch.float64)
    opt = (torch.optim.Adam(model.parameters(), lr=0.02) if optimizer == "adam"
           else torch.optim.SGD(model.parameters(), lr=0.2))
    ce = nn.functional.cross_entropy

    def loss_of(xb, yb):
        with torch.no_grad():
            return float(ce(model(xb), yb))

    def acc_of(xb, yb):
        with torch.no_grad():
            return float((model(xb).argmax(1) == yb).double().mean())

    batches = [slice(i, i + 16) for i in range(0, 64, 16)]
    held = (x[64:80], y[64:80])
    config = {"optimizer": optimizer, "seed": seed, "model": {"kind": "mlp", "hidden": 12}}
    with Recorder(path, model, probe=(x[:16], y[:16]), config=config, schedule=every(checkpoint_every)) as rec:
        rec.checkpoint(0, train_loss=loss_of(*train), train_acc=acc_of(*train), test_loss=loss_of(*test),
                       test_acc=acc_of(*test))
        if flush:
            rec.flush()
        yield 0
        for step in range(1, steps + 1):
            b, nb = batches[(step - 1) % 4], batches[step % 4]
            xb, yb = train[0][b], train[1][b]
            other, upcoming = loss_of(*held), loss_of(train[0][nb], train[1][nb])
            loss = ce(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.log(step, epoch=step / 4, loss=float(loss.detach()), loss_after=loss_of(xb, yb), other_loss=other,
                    other_loss_after=loss_of(*held), next_loss=upcoming, next_loss_after=loss_of(train[0][nb], train[1][nb]),
                    lr=0.2, time=0.001 * step)
            rec.checkpoint(step, epoch=step / 4, train_loss=loss_of(*train), train_acc=acc_of(*train),
                           test_loss=loss_of(*test), test_acc=acc_of(*test))
            if flush:
                rec.flush()
            yield step
