"""A trainer's resume state beside its run store: ``<store>/resume/state.pt``.

:func:`write_state` saves it atomically (``torch.save`` into memory, then a temporary file renamed
into place), :func:`read_state` loads it with ``torch.load(weights_only=True)`` (tensors, numbers,
strings, lists, dicts; no pickle of arbitrary objects).
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import torch

from dynamics.errors import StoreError


def state_path(store: Path) -> Path:
    return store / "resume" / "state.pt"


def write_state(store: Path, state: dict) -> None:
    """Save ``state`` for the store at ``store``; TypeError for a non-dict, StoreError naming the file
    and errno for a file error (disk full, read-only), the temporary file removed."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    buffer = io.BytesIO()   # serialised first, so that a file error is an OSError with its errno
    torch.save(state, buffer)
    target = state_path(store)
    tmp = target.with_name(f"state.pt.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)   # never leave a partial file holding the space close() needs
        raise StoreError(f"cannot save the resume state {target}: {err.strerror} "
                         f"({errno.errorcode.get(err.errno, err.errno)})") from None


def read_state(store: Path) -> dict | None:
    """The state saved for the store at ``store`` (``torch.load(weights_only=True)``), or None."""
    target = state_path(store)
    if not target.is_file():
        return None
    return torch.load(target, weights_only=True, map_location="cpu")
