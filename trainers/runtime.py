"""Where a run computes: its CPU thread count and its torch device.

Threads. The thread count of a training process is part of the run's configuration
(``train.threads``, default 1; ``--threads N`` sets it), recorded in its store, and never derived
from the machine's load: different thread counts may split reductions differently and so change
float rounding, and a result must not depend on what else the machine was doing. Concurrency comes
from processes instead: ``dynamics run`` and ``dynamics sweep`` train
:func:`concurrent_runs` runs at once, each in its own process with ``train.threads`` threads (torch's
default of one thread per core *per process* would oversubscribe the cores: issue 15 measured a
RevMLP Adam step at 175 ms with 2 threads per process on a loaded 2-core machine, 6.8 ms with 1).
:func:`apply_threads` sets ``torch.set_num_threads`` in this process and ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` in ``os.environ`` so that child processes start with
the same count before torch creates its thread pools.

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


def concurrent_runs(threads: int, runs: int, cores: int | None = None) -> int:
    """How many of ``runs`` runs of ``threads`` threads each train at once on ``cores`` CPUs (default:
    :func:`available_cores`): ``max(1, min(runs, cores // threads))``, so the processes together use
    at most every core once (one at a time when a run's threads alone fill the machine).

    ``threads``, ``runs``, ``cores`` must be ints >= 1 (ValueError naming the bad one)."""
    cores = available_cores() if cores is None else cores
    for name, value in (("threads", threads), ("runs", runs), ("cores", cores)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return max(1, min(runs, cores // threads))


def check_threads(threads: object) -> int:
    """``threads`` if it is an int ≥ 1, else a ConfigError naming it."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"--threads (config key train.threads) must be an integer >= 1, got {threads!r}")
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
