"""Run stores written by a plain training loop through ``dynamics.Recorder`` (no trainers package)."""

import numpy as np
import torch

from dynamics import Recorder
from dynamics.models import RevMLP
from dynamics.schedules import every


def blob_data(n, dim, classes, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=g, dtype=torch.float64) * 2.0
    return centres[y] + torch.randn(n, dim, generator=g, dtype=torch.float64), y


def write_run(path, *, optimizer="sgd", seed=0, steps=30, checkpoint_every=10, lr=0.1, probe_size=24,
              dim=8, hidden=16, depth=2, classes=3, ntk=True, other_batch=True, config_extra=None):
    """Train a small RevMLP with SGD or Adam on Gaussian blobs; log per-batch before/after losses.

    Runs torch on one thread (restored afterwards): these matrices are tiny, and on a busy 2-core
    machine two OpenMP threads per process mostly wait for each other.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _write_run(path, optimizer, seed, steps, checkpoint_every, lr, probe_size, dim, hidden, depth,
                          classes, ntk, other_batch, config_extra or {})
    finally:
        torch.set_num_threads(threads)


def _write_run(path, optimizer, seed, steps, checkpoint_every, lr, probe_size, dim, hidden, depth, classes, ntk,
               other_batch, config_extra):
    model = RevMLP(dim, hidden, depth, classes, seed=seed, dtype=torch.float64)
    x, y = blob_data(200, dim, classes, seed=123)  # the data (and so the probe) do not depend on the seed
    probe = (x[:probe_size], y[:probe_size])
    other = (x[-20:], y[-20:])
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    config = {"optimizer": optimizer, "seed": seed, "model": {"dim": dim, "hidden": hidden, "depth": depth},
              **config_extra}
    g = torch.Generator().manual_seed(seed)
    with Recorder(path, model, probe=probe, config=config, schedule=every(checkpoint_every), ntk=ntk) as rec:
        for step in range(steps + 1):
            if step % checkpoint_every == 0:
                with torch.no_grad():
                    logits = model(x[:150])
                    rec.checkpoint(step, epoch=step / 10, train_loss=float(loss_fn(logits, y[:150])),
                                   train_acc=float((logits.argmax(1) == y[:150]).double().mean()),
                                   test_loss=float(loss_fn(model(x[150:]), y[150:])),
                                   test_acc=float((model(x[150:]).argmax(1) == y[150:]).double().mean()))
            if step == steps:
                break
            idx = torch.randint(0, 150, (16,), generator=g)
            xb, yb = x[idx], y[idx]
            with torch.no_grad():
                other_before = float(loss_fn(model(other[0]), other[1]))
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                after = float(loss_fn(model(xb), yb))
                other_after = float(loss_fn(model(other[0]), other[1]))
            scalars = {"loss": float(loss.detach()), "loss_after": after, "lr": lr}
            if other_batch:
                scalars.update(other_loss=other_before, other_loss_after=other_after)
            rec.log(step, epoch=step / 10, **scalars)
    return path


def probe_of(path):
    import xarray as xr
    with xr.open_zarr(path, group="probe") as ds:
        return np.asarray(ds["x"].values), np.asarray(ds["y"].values)
