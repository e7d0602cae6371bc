"""A small deterministic training run that records into a store; the kill test SIGKILLs it.

``train(path, n_steps, resume=...)`` trains an MLP (float64, SGD with momentum) on fixed data,
logging every step and storing a checkpoint (parameters, NTK, representations) every
``CHECKPOINT_EVERY`` steps, after which it saves the resume state (model, optimizer, next step).
With ``resume=True`` it loads that state, truncates the store to it and continues, so a run killed
at any moment and resumed must end with exactly the values of an uninterrupted run.

Run as a script: ``python kill_writer.py STORE N_STEPS`` prints "ready" once the store exists.
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn

from dynamics.models import MLP
from dynamics.recorder import Recorder
from dynamics.schedules import every

CHECKPOINT_EVERY = 5
FLUSH_EVERY = 8


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=gen)
    return x, y, x[:10], y[:10]


def train(path: str, n_steps: int, *, resume: bool = False, announce: bool = False) -> None:
    torch.set_num_threads(1)
    x, y, x_probe, y_probe = _data()
    model = MLP(6, 8, 2, 3, seed=0, dtype=torch.float64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rec = Recorder(path, model, (x_probe, y_probe), config={"n_steps": n_steps}, resume=resume,
                   schedule=every(CHECKPOINT_EVERY), flush_every=FLUSH_EVERY)
    start = 0
    if resume:
        state = rec.load_state()
        if state is None:
            rec.truncate(-1)
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start = state["next_step"]
            rec.truncate(start - 1)
    if announce:
        print("ready", flush=True)
    with rec:
        for step in range(start, n_steps):
            batch = slice(8 * (step % 8), 8 * (step % 8) + 8)
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            grad_norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
            optimizer.step()
            rec.log(step, epoch=step // 8, loss=loss, grad_norm=grad_norm,
                    **({"late": float(step)} if step >= 13 else {}))
            with torch.no_grad():
                train_loss = torch.nn.functional.cross_entropy(model(x), y)
            if rec.checkpoint(step, epoch=step // 8, train_loss=train_loss):
                rec.save_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "next_step": step + 1})


def slow(path: str) -> None:
    """Log a row every 0.05 s (printing "logged STEP" after each), never checkpointing, with
    ``flush_secs=0.3`` and a ``flush_every`` never reached: only the time bound writes rows."""
    x, y, x_probe, y_probe = _data()
    model = MLP(6, 8, 2, 3, seed=0, dtype=torch.float64)
    rec = Recorder(path, model, (x_probe, y_probe), ntk=False, layers=[], flush_every=10 ** 6, flush_secs=0.3)
    print("ready", flush=True)
    for step in range(10 ** 6):
        rec.log(step, loss=0.5 * step)
        print(f"logged {step}", flush=True)
        time.sleep(0.05)


#: Seconds each background NTK of :func:`slow_kernel` takes (its one forward pass under autograd sleeps).
KERNEL_SECS = 1.5


class _SlowKernel(nn.Module):
    """Linear(6 → 8) → tanh → Linear(8 → 3) whose forward pass sleeps KERNEL_SECS while gradients are
    recorded (only the NTK's; the loop of :func:`slow_kernel` trains without autograd)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(6, 8).double(), nn.Linear(8, 3).double()

    def forward(self, x):
        if torch.is_grad_enabled():
            time.sleep(KERNEL_SECS)
        return self.b(torch.tanh(self.a(x)))


def slow_kernel(path: str) -> None:
    """Log a row every 0.05 s and checkpoint every 10 steps (its NTK takes KERNEL_SECS on the worker
    thread), with ``flush_secs=0.3`` and a ``flush_every`` never reached; print "logged STEP TIME" after
    each row and "checkpoint STEP TIME" after each checkpoint call returned (``time.monotonic()``)."""
    _, _, x_probe, y_probe = _data()
    model = _SlowKernel()
    rec = Recorder(path, model, (x_probe, y_probe), layers=[], flush_every=10 ** 6, flush_secs=0.3)
    print("ready", flush=True)
    for step in range(10 ** 6):
        rec.log(step, loss=0.5 * step)
        print(f"logged {step} {time.monotonic()}", flush=True)
        if step % 10 == 0:
            rec.checkpoint(step)
            print(f"checkpoint {step} {time.monotonic()}", flush=True)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.99)
        time.sleep(0.05)


if __name__ == "__main__":
    if sys.argv[2] == "slow":
        slow(sys.argv[1])
    elif sys.argv[2] == "slow_kernel":
        slow_kernel(sys.argv[1])
    else:
        train(sys.argv[1], int(sys.argv[2]), announce=True)
