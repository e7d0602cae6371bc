"""The machine a run computed on, as published numbers must name it.

Float results depend on the CPU's kernels: torch picks vectorised kernels by the CPU's instruction
set (``torch.backends.cpu.get_cpu_capability()``: "AVX512", "AVX2", "DEFAULT"...; the environment
variable ``ATEN_CPU_CAPABILITY`` forces a lower one), and different kernels round differently. The
default run's Adam test accuracy moved from 50.4 ± 0.75 % (AVX512) to 48.7 ± 1.5 % under AVX2 kernels
on the same machine (docs/results.md). :func:`describe` records what decides that; ``dynamics run``
appends it to ``DIR/machine.json`` (:func:`record`) and ``dynamics tables`` prints it beside the
tables.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch

MACHINE_FILE = "machine.json"
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "OMP_NUM_THREADS")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else :func:`platform.processor`; else "unknown")."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe(threads: int, workers: int) -> dict:
    """What decides a run's rounding and speed here: CPU model, cores, platform, Python, torch and its
    CPU kernel capability, BLAS, the kernel-choosing environment variables that are set, and the run's
    ``threads`` per process and ``workers`` (runs at once)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    blas = "MKL" if torch.backends.mkl.is_available() else "other"
    return {"cpu": cpu_model(), "cores": cores, "platform": platform.platform(), "python": sys.version.split()[0],
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "blas": blas,
            "environment": {k: os.environ[k] for k in KERNEL_VARIABLES if k in os.environ},
            "threads": threads, "workers": workers}


def record(folder: str | os.PathLike, machine: dict) -> Path:
    """Append ``machine`` to ``folder/machine.json`` (``{"machines": [...]}``, one entry per invocation
    that trained into the folder, repeated entries kept once); returns the file's path."""
    path = Path(folder) / MACHINE_FILE
    try:
        machines = json.loads(path.read_text())["machines"]
    except (OSError, ValueError, KeyError, TypeError):
        machines = []
    if machine not in machines:
        machines.append(machine)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machines": machines}, indent=2) + "\n")
    tmp.replace(path)
    return path


def read(folder: str | os.PathLike) -> list[dict]:
    """The machines recorded in ``folder/machine.json`` (empty when there is none or it is unreadable)."""
    try:
        machines = json.loads((Path(folder) / MACHINE_FILE).read_text())["machines"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [m for m in machines if isinstance(m, dict)] if isinstance(machines, list) else []


def summary(machine: dict) -> str:
    """One line: "AMD EPYC (2 cores), torch 2.13.0+cpu, AVX512 kernels, MKL, 1 thread × 2 runs at once"."""
    env = machine.get("environment") or {}
    forced = "; " + ", ".join(f"{k}={v}" for k, v in env.items()) if env else ""
    return (f"{machine.get('cpu', 'unknown CPU')} ({machine.get('cores', '?')} cores), torch {machine.get('torch', '?')}, "
            f"{machine.get('cpu_capability', '?')} kernels, {machine.get('blas', '?')}, "
            f"{machine.get('threads', '?')} thread(s) × {machine.get('workers', '?')} run(s) at once{forced}")
