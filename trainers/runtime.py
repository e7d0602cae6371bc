"""Where a run computes: its CPU thread count and its torch device.

Threads. torch's default is one OpenMP thread per physical core *per process*. When several
processes train at once, or another program keeps a core busy, those threads wait on each other at
every barrier and a step slows down many times over (issue 15: a RevMLP Adam step took 175 ms with
2 threads and 6.8 ms with 1 on a loaded 2-core machine). So every training process uses its *share*
of the cores::

    share   = max(1, cores // concurrent)        cores: CPUs this process may run on
    default = max(1, min(share, cores - busy))   busy: round(1-minute load average), other programs

``--threads N`` pins the count (any N ≥ 1; the share is then not applied). :func:`apply_threads` sets
``torch.set_num_threads`` in this process and ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` in
``os.environ`` so that child processes (dask workers, subprocesses) start with the same count before
torch creates its thread pools. Different thread counts may change float rounding (reductions split
differently): pin ``--threads`` to reproduce a run bit for bit on another machine or load.

Devices. ``train.device`` is "cpu", "cuda", "cuda:N" or "auto" (CUDA when available, else CPU);
:func:`resolve_device` turns it into a ``torch.device`` or raises ConfigError when CUDA is asked for
and not available.
"""

from __future__ import annotations

import os
import re

import torch

from dynamics.errors import ConfigError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
DEVICE_PATTERN = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one), ≥ 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def thread_share(concurrent: int = 1, cores: int | None = None, busy: float = 0.0) -> int:
    """Threads for one of ``concurrent`` runs training at once on ``cores`` CPUs while other
    programs keep ``busy`` CPUs busy: ``max(1, min(cores // concurrent, cores - round(busy)))``.

    Never more than the share, never fewer than 1. ``concurrent`` < 1 or ``cores`` < 1 → ValueError."""
    cores = available_cores() if cores is None else cores
    for name, value in (("concurrent", concurrent), ("cores", cores)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not busy >= 0:
        raise ValueError(f"busy must be >= 0, got {busy!r}")
    return max(1, min(cores // concurrent, cores - round(busy)))


def default_threads(concurrent: int = 1) -> int:
    """:func:`thread_share` of the available cores, less those the 1-minute load average shows busy."""
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        busy = 0.0
    return thread_share(concurrent, available_cores(), busy)


def check_threads(threads: object) -> int:
    """``threads`` if it is an int ≥ 1, else a ConfigError naming it."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"--threads must be an integer >= 1, got {threads!r}")
    return threads


def apply_threads(threads: int) -> int:
    """Use ``threads`` intra-op threads here (``torch.set_num_threads``) and in child processes
    (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``); returns ``threads``."""
    threads = check_threads(threads)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
    return threads


def thread_settings() -> dict:
    """The thread settings in force: torch intra-/inter-op threads, the environment variables, cores."""
    out = {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
           "cores": available_cores()}
    out.update({name: os.environ.get(name, "unset") for name in THREAD_VARIABLES})
    return out


def resolve_device(spec: object) -> torch.device:
    """``spec`` ("cpu" | "cuda" | "cuda:N" | "auto") as a ``torch.device``.

    "auto" is CUDA device 0 when CUDA is available, else the CPU. ConfigError when ``spec`` is not one
    of those forms, when CUDA is asked for and torch sees none, or when N is not a visible device."""
    if not isinstance(spec, str) or not DEVICE_PATTERN.match(spec):
        raise ConfigError(f"config key train.device = {spec!r} is not allowed; choose 'cpu', 'cuda', "
                          f"'cuda:N' or 'auto'")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"config key train.device = {spec!r} asks for CUDA, but torch {torch.__version__} "
                          f"sees no CUDA device here; use 'cpu' or 'auto'")
    device = torch.device(spec)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"config key train.device = {spec!r}: only {count} CUDA device(s) are visible "
                          f"(cuda:0 … cuda:{count - 1})")
    return device
