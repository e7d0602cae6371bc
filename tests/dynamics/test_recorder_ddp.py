"""A Recorder inside ``torchrun --nproc_per_node 2`` (gloo, CPU): rank 0 writes, rank 1 does nothing,
DistributedDataParallel is unwrapped for parameters and NTK."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dynamics
from dynamics import Recorder
from dynamics.distributed import InactiveRecorder, process_rank, unwrap_model
from dynamics.models import MLP

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def test_torchrun_two_ranks_rank0_writes_unwrapped(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(HERE / "ddp_train.py"), str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert info[0]["class"] == "Recorder" and info[1]["class"] == "InactiveRecorder"
    assert not info[1]["is_recorder"] and not info[0]["store_existed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.json", "rank0.npz", "rank1.json", "rank1.npz",
                                                          "run.zarr"]
    tree = dynamics.open_run(tmp_path / "run.zarr")
    assert tree.attrs["status"] == "complete"
    assert tree["checkpoints"]["checkpoint_step"].values.tolist() == [0, 2, 4, 6]
    assert tree["metrics"].sizes["step"] == 6
    params = tree["params"].to_dataset()
    names = sorted(v for v in params.data_vars)
    assert names and not any(n.startswith("module") for n in names)
    final = [np.load(tmp_path / f"rank{r}.npz") for r in (0, 1)]
    for name in names:   # rank 0's stored parameters are the run's: equal to both ranks' final ones
        np.testing.assert_array_equal(params[name].values[-1], final[0][name])
        np.testing.assert_array_equal(final[0][name], final[1][name])
    # the stored NTK is the inner model's, against a dense jacrev brute force (float64)
    np.testing.assert_allclose(tree["checkpoints"]["ntk"].values[-1], final[0]["ntk"], rtol=1e-10, atol=1e-12)
    assert not (tmp_path / "run.zarr" / ".lock").exists()


def test_rank_from_environment_and_inactive_recorder_is_a_no_op(tmp_path, monkeypatch):
    model = MLP(4, 5, 1, 3, seed=0, dtype=torch.float64)
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.arange(6) % 3
    monkeypatch.setenv("RANK", "1")
    assert process_rank() == 1
    rec = Recorder(tmp_path / "r.zarr", model, probe=(x, y))
    assert isinstance(rec, InactiveRecorder) and rec.model is model
    with rec:
        rec.log(1, loss=1.0)
        assert rec.checkpoint(1, test_acc=0.5) is False
        rec.save_state({"step": 1})
        assert rec.load_state() is None and rec.last_step is None and rec.checkpoint_steps == []
    assert rec.closed and not (tmp_path / "r.zarr").exists()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK"):
        process_rank()
    monkeypatch.setenv("RANK", "0")
    with Recorder(tmp_path / "r.zarr", torch.nn.DataParallel(model), probe=(x, y)) as rec:
        assert rec.model is model
        rec.checkpoint(0)
    stored = dynamics.open_run(tmp_path / "r.zarr")["params"].to_dataset()
    assert sorted(stored.data_vars) == sorted(n.replace(".", "__") for n, _ in model.named_parameters())


def test_unwrap_model_leaves_plain_modules():
    model = MLP(4, 5, 1, 3, seed=0)
    assert unwrap_model(model) is model
    assert unwrap_model(torch.nn.DataParallel(torch.nn.DataParallel(model))) is model
