"""Thread shares and device resolution (trainers.runtime); CUDA cases skip without a GPU."""

import os
import subprocess
import sys

import pytest
import torch

from dynamics.errors import ConfigError
from trainers.runtime import apply_threads, check_threads, concurrent_runs, resolve_device, thread_settings

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("threads, runs, cores, expected", [
    (1, 9, 2, 2),       # the default run on 2 cores: two runs at a time, one thread each
    (2, 9, 2, 1),       # two threads per run fill the machine: one at a time
    (1, 1, 16, 1),      # never more processes than runs
    (3, 9, 16, 5),      # floor(16 / 3)
    (4, 2, 2, 1),       # more threads than cores: still one
])
def test_concurrent_runs_fill_the_cores_once(threads, runs, cores, expected):
    brute = max(1, min(runs, cores // threads))
    assert concurrent_runs(threads, runs, cores) == expected == brute


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_concurrent_runs_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="threads"):
        concurrent_runs(bad, 4)
    with pytest.raises(ValueError, match="runs"):
        concurrent_runs(1, bad)


@pytest.mark.parametrize("bad", [0, -3, 2.0, None, True])
def test_check_threads_rejects(bad):
    with pytest.raises(ConfigError, match="--threads"):
        check_threads(bad)


def test_apply_threads_reaches_child_processes():
    """A child started after apply_threads inherits the count and torch uses it there."""
    before = torch.get_num_threads()
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    try:
        assert apply_threads(1) == 1
        assert torch.get_num_threads() == 1 and thread_settings()["OMP_NUM_THREADS"] == "1"
        child = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                               capture_output=True, text=True, check=True)
        assert child.stdout.strip() == "1"
    finally:
        torch.set_num_threads(before)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.mark.parametrize("spec", ["cpu", "auto"])
def test_resolve_device_cpu_and_auto(spec):
    expected = "cuda" if spec == "auto" and torch.cuda.is_available() else "cpu"
    assert resolve_device(spec).type == expected


@pytest.mark.parametrize("bad", ["gpu", "CUDA", "cuda:", "cuda:x", "mps0", "", 0, None])
def test_resolve_device_rejects_unknown_forms(bad):
    with pytest.raises(ConfigError, match="train.device"):
        resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_resolve_device_cuda_without_cuda_is_a_config_error(spec):
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device(spec)


@CUDA
def test_resolve_device_cuda_index_range():
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="visible"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
