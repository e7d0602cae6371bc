"""Filling a (small, test-mounted) file system for the full-disk tests."""

from __future__ import annotations

import os
from pathlib import Path


def fill(directory: Path, leave: int = 0) -> None:
    """Fill ``directory``'s file system until writes of even one byte fail (ENOSPC), then free
    ``leave`` bytes of it again (``directory/ballast`` holds the filling)."""
    fd = os.open(directory / "ballast", os.O_CREAT | os.O_WRONLY | os.O_APPEND)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
        if leave:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
