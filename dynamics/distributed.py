"""A Recorder inside a multi-process (DDP, ``torchrun``) training job.

Pattern: every rank runs the same loop and constructs the same Recorder; only rank 0 writes. ::

    torch.distributed.init_process_group("gloo")          # or "nccl"; torchrun sets RANK, WORLD_SIZE
    model = torch.nn.parallel.DistributedDataParallel(net)
    with Recorder("runs/ddp.zarr", model, probe=(x_probe, y_probe), schedule=every(100)) as rec:
        for step in range(1, steps + 1):
            loss = train_step(model)                       # collective all-reduce inside backward
            rec.log(step, loss=loss)                      # rank 0: buffered; other ranks: nothing
            rec.checkpoint(step, test_acc=evaluate())     # rank 0: NTK, representations, params

- On ranks other than 0 ``Recorder(...)`` returns an :class:`InactiveRecorder`: every method is a
  cheap no-op (no file is opened, created or locked, so ranks never contend for the store's lock),
  except :meth:`InactiveRecorder.load_state`, which reads rank 0's resume state (read-only) so that
  every rank resumes from the same state.
- The rank is ``torch.distributed.get_rank()`` when a process group is initialised, else the ``RANK``
  environment variable (set by ``torchrun``), else 0.
- A ``DistributedDataParallel`` (or ``DataParallel``, FSDP, ``torch.compile``d, ...) model is
  unwrapped to the network inside (:mod:`dynamics.wrappers`, the one place for this) before anything
  is recorded: parameters are stored under the inner model's names (no ``module.`` prefix), and the
  NTK and representations are computed on the inner module, so rank 0's checkpoint runs no
  collective operation that the other ranks would have to join. Layer names given to the Recorder
  are names in the inner model.
- Parameters are identical on every rank after each DDP step, so rank 0's copy is the run's.
  Metrics that differ per rank (each rank's own mini-batch loss) should be reduced by the caller
  (e.g. ``all_reduce`` then divide by the world size) before ``log``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dynamics.wrappers import unwrap_model

__all__ = ["InactiveRecorder", "process_rank", "unwrap_model"]


def process_rank() -> int:
    """This process's rank in the distributed job (0 when not distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        raise ValueError(f"environment variable RANK must be an integer, got {os.environ['RANK']!r}") from None


class InactiveRecorder:
    """What ``Recorder(...)`` is on a rank other than 0: the Recorder's methods, doing nothing.

    Construct it through ``Recorder``; its arguments are accepted and not checked (rank 0 checks them).
    """

    def __init__(self, path: str | os.PathLike, model: nn.Module, probe: Any = None, *,
                 schedule: Callable[[int], bool] | None = None, **options: Any) -> None:
        self.path = Path(path)
        self.model = unwrap_model(model)
        self.rank = process_rank()
        self._closed = False

    @property
    def last_step(self) -> None:
        return None

    @property
    def checkpoint_steps(self) -> list[int]:
        return []

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ntk_at_once(self) -> None:
        """None (rank 0 computes the NTKs)."""
        return None

    @property
    def state_path(self) -> Path:
        return self.path / "resume" / "state.pt"

    def log(self, step: int, epoch: Any = None, **scalars: Any) -> None:
        """Nothing (rank 0 records)."""

    def flush(self) -> None:
        """Nothing."""

    def checkpoint(self, step: int, epoch: Any = None, **scalars: Any) -> bool:
        """Nothing; returns False (this rank stored nothing)."""
        return False

    def truncate(self, step: int) -> None:
        """Nothing."""

    def save_state(self, state: dict) -> None:
        """Nothing (rank 0 saves the state)."""

    def load_state(self) -> dict | None:
        """Rank 0's saved resume state (read-only), or None."""
        if not self.state_path.is_file():
            return None
        return torch.load(self.state_path, weights_only=True, map_location="cpu")

    def close(self, status: str = "complete", error: str | None = None) -> None:
        self._closed = True

    def __enter__(self) -> InactiveRecorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return False

    def __repr__(self) -> str:
        return f"InactiveRecorder({str(self.path)!r}, rank={self.rank})"
