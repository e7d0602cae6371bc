"""Thread shares and device resolution (trainers.runtime); CUDA cases skip without a GPU."""

import os
import subprocess
import sys

import pytest
import torch

from dynamics.errors import ConfigError
from trainers.runtime import (apply_threads, check_threads, default_threads, resolve_device, thread_settings,
                              thread_share)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("concurrent, cores, busy, expected", [
    (1, 2, 0.0, 2),     # one run, idle machine: all cores
    (1, 2, 1.0, 1),     # one other busy program on 2 cores: the free core
    (1, 2, 3.2, 1),     # overloaded: never fewer than one
    (2, 2, 0.0, 1),     # two runs share two cores
    (3, 16, 0.0, 5),    # floor(16 / 3)
    (4, 16, 13.6, 2),   # 16 - 14 busy
    (8, 4, 0.0, 1),     # more runs than cores: one each
])
def test_thread_share_is_the_share_of_free_cores(concurrent, cores, busy, expected):
    brute = max(1, min(cores // concurrent, cores - int(busy + 0.5)))
    assert thread_share(concurrent, cores, busy) == expected == brute


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_thread_share_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="concurrent"):
        thread_share(bad, 4)
    with pytest.raises(ValueError, match="cores"):
        thread_share(1, bad)


def test_default_threads_within_the_share():
    cores = len(os.sched_getaffinity(0))
    assert 1 <= default_threads(1) <= cores
    assert default_threads(cores + 1) == 1


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
