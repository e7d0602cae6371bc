"""One line describing what a benchmark ran under: torch/BLAS threads, CPUs, device, load average.

Every benchmark prints :func:`environment_line` in its header, so its numbers can be judged against
the machine's state: times taken under load (load average ≳ CPUs) are inflated, ratios less so.
Run as a script, it prints the line.
"""

from __future__ import annotations

import os

import torch


def environment_line(device: str | None = None) -> str:
    """``torch 2.x, 2 intra-op / 2 inter-op threads, OMP_NUM_THREADS=unset, MKL_NUM_THREADS=unset, 2 CPUs,
    device cpu, load average 1.2 / 1.0 / 0.9 (1 / 5 / 15 min)``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    try:
        load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    except (AttributeError, OSError):
        load = "n/a"
    if device is None:
        device = "cpu"
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    variables = ", ".join(f"{name}={os.environ.get(name, 'unset')}" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    return (f"torch {torch.__version__}, {torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} "
            f"inter-op threads, {variables}, {cpus} CPUs, device {device}, load average {load} (1 / 5 / 15 min)")


def synchronize(device: str | torch.device | None) -> None:
    """Wait for queued CUDA work on ``device`` (a timer must not stop before the kernels finish); no-op on CPU."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


if __name__ == "__main__":
    print(environment_line())
