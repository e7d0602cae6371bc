"""A background NTK of a model whose forward pass reads a Python number the snapshot does not own (a
global schedule value, here a temperature the loop anneals) — found by helper break-1. The snapshot
check watches tensors only, so this model keeps the worker thread and its kernel is computed with the
value as changed after ``checkpoint`` returned: silently wrong (relative error ≈ 0.6 here). Reference:
the dense ``jacrev`` NTK taken just before each ``checkpoint`` call."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

from dynamics import Recorder, open_run

SCHEDULE = {"temperature": 1.0}   # a global the training loop changes; not a tensor
GATE = threading.Event()          # holds the worker's kernel until the loop has changed the global


class _Annealed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(4, 6).double(), nn.Linear(6, 2).double()

    def forward(self, x):
        if threading.current_thread().name.startswith("ntk-worker"):
            assert GATE.wait(timeout=60)
        return self.b(torch.tanh(self.a(x) / SCHEDULE["temperature"]))


def _dense_ntk(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(model, p, (x,)))(params)
    dense = torch.cat([j.reshape(x.shape[0], 2, -1) for j in jac.values()], dim=-1)
    return torch.einsum("nop,mop->nm", dense, dense).numpy()


@pytest.mark.xfail(strict=True, reason="dynamics/ntk/background.py (owner: recorder) checks snapshots for outside "
                                       "tensors only; a Python number read from a global, a closure or another "
                                       "object is not seen, so the worker computes the kernel with its later value")
def test_a_global_number_changed_after_checkpoint_does_not_change_its_kernel(tmp_path):
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.arange(7) % 2
    model = _Annealed()
    SCHEDULE["temperature"] = 1.0
    references = []
    try:
        with Recorder(tmp_path / "r.zarr", model, (x, y), layers=[]) as rec:
            for step in range(2):
                GATE.clear()
                references.append(_dense_ntk(model, x))
                rec.checkpoint(step)
                SCHEDULE["temperature"] *= 0.5          # the loop anneals right after the checkpoint
                GATE.set()
                rec.flush()
    finally:
        GATE.set()
    kernels = open_run(tmp_path / "r.zarr")["checkpoints"]["ntk"].values
    for step, reference in enumerate(references):
        np.testing.assert_allclose(kernels[step], reference, rtol=1e-10, atol=1e-12, err_msg=f"step {step}")
