"""train.device / --device: validation on any machine; CUDA equals CPU where a GPU exists (skipped here)."""

import copy

import numpy as np
import pytest
import torch

import dynamics
from dynamics.cli import main
from dynamics.errors import ConfigError
from dynamics.gauss_newton import ReversibleGN
from dynamics.models import MLP, RevMLP
from dynamics.ntk import empirical_ntk
from trainers import train
from trainers.config import validate
from trainers.setup import prepare

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def metrics(path):
    tree = dynamics.open_run(path)
    return tree["metrics"].to_dataset().load(), tree["checkpoints"].to_dataset().load(), tree["params"].to_dataset().load()


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "CUDA", "cuda:-1", "tpu:0"])
def test_config_rejects_unknown_devices(tiny, bad):
    with pytest.raises(ConfigError, match="train.device"):
        tiny(train={"device": bad})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_a_gpu_is_a_config_error_before_anything_is_written(tmp_path, tiny, spec):
    out = tmp_path / "adam.zarr"
    with pytest.raises(ConfigError, match="no CUDA device"):
        train(tiny(train={"device": spec}), "adam", out, progress=False)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cli_device_cuda_without_a_gpu_exits_2_with_one_line(tmp_path, capsys):
    code = main(["train", "--preset", "digits", "--optimizer", "adam", "--device", "cuda",
                 "--out", str(tmp_path / "a.zarr"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "CUDA" in err and "Traceback" not in err


@pytest.mark.parametrize("spec", ["cpu", "auto"])
def test_cpu_and_auto_train_like_the_default(tmp_path, tiny, spec):
    """'cpu' (and 'auto' on a machine without CUDA) give the numbers of the default, bit for bit."""
    if spec == "auto" and torch.cuda.is_available():
        pytest.skip("auto picks CUDA here; compared in test_short_train_on_cuda_equals_cpu")
    config = tiny(train={"steps": 6})
    base = metrics(train(config, "adam", tmp_path / "base.zarr", seed=1, progress=False))
    other = metrics(train(tiny(train={"steps": 6, "device": spec}), "adam", tmp_path / f"{spec}.zarr", seed=1,
                          progress=False))
    for a, b in zip(base, other):
        for name in a.data_vars:
            if name != "time" and np.issubdtype(a[name].dtype, np.number):
                np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_experiment_to_moves_data_keeps_index_tensors(tiny):
    experiment = prepare(tiny())
    moved = experiment.to("cpu")
    assert moved.x.device.type == "cpu" and moved.pool is experiment.pool and moved.probe is experiment.probe
    assert torch.equal(moved.eval_test[0], experiment.eval_test[0])


@CUDA
@pytest.mark.parametrize("optimizer", ["gn", "adam"])
def test_short_train_on_cuda_equals_cpu(tmp_path, tiny, optimizer):
    """float64: the same batches (CPU-drawn order), so losses and parameters agree to rounding."""
    cpu = metrics(train(tiny(train={"steps": 8}), optimizer, tmp_path / "cpu.zarr", seed=2, progress=False))
    gpu = metrics(train(tiny(train={"steps": 8, "device": "cuda"}), optimizer, tmp_path / "cuda.zarr", seed=2,
                        progress=False))
    for name in ("loss", "loss_after", "other_loss", "grad_norm", "update_norm"):
        np.testing.assert_allclose(gpu[0][name].values, cpu[0][name].values, rtol=1e-7, atol=1e-10, err_msg=name)
    for name in cpu[2].data_vars:
        np.testing.assert_allclose(gpu[2][name].values, cpu[2][name].values, rtol=1e-7, atol=1e-10, err_msg=name)
    assert dynamics.open_run(tmp_path / "cuda.zarr").attrs["status"] == "complete"


@CUDA
def test_gn_step_on_cuda_equals_cpu():
    model = RevMLP(16, 32, 2, 4, first_linear=True, seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 16, generator=gen, dtype=torch.float64), torch.randint(0, 4, (12,), generator=gen)
    gpu_model = copy.deepcopy(model).cuda()
    report_cpu = ReversibleGN(model, lr=0.1).step(x, y)
    report_gpu = ReversibleGN(gpu_model, lr=0.1).step(x.cuda(), y.cuda())
    assert report_gpu.residual < 1e-8 and abs(report_gpu.loss - report_cpu.loss) < 1e-10
    for (name, p), q in zip(model.named_parameters(), gpu_model.parameters()):
        assert q.device.type == "cuda"
        torch.testing.assert_close(q.cpu(), p, rtol=1e-9, atol=1e-11, msg=name)


@CUDA
@pytest.mark.parametrize("method", ["structured", "jacobian"])
def test_ntk_on_cuda_equals_cpu(method):
    model = MLP(10, 16, 2, 3, seed=0, dtype=torch.float64)
    x = torch.randn(7, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cpu = empirical_ntk(model, x, trace=False, method=method)
    gpu = empirical_ntk(copy.deepcopy(model).cuda(), x.cuda(), trace=False, method=method)
    assert gpu.device.type == "cuda"
    # brute force: dense Jacobian on the CPU
    params = dict(model.named_parameters())
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(model, p, (x,)))(params)
    flat = torch.cat([j.reshape(7, 3, -1) for j in jac.values()], dim=-1)
    brute = torch.einsum("aip,bjp->abij", flat, flat)
    torch.testing.assert_close(gpu.cpu(), brute, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(cpu, brute, rtol=1e-9, atol=1e-11)
