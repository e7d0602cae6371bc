"""The generic NTK paths: a memory budget (chunks of samples and outputs), NTK-vector products, the plain-
autograd path for models torch.func refuses (issue 21 item 8), and the probe-memory estimate (issue 22).

References: dense per-sample Jacobians from loops of plain autograd in float64 (``model_references``);
tolerance rtol 1e-10 (round-off only).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import model_zoo as zoo
from dynamics import Recorder
from dynamics.ntk import budget, empirical_ntk
from dynamics.ntk.api import ntk_plan
from dynamics.ntk.generic import jacobian_kernel
from dynamics.ntk.rows import make_rows
from model_references import dense_ntk, traced

F64 = dict(rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", [zoo.mlp, zoo.cnn, zoo.gru, zoo.two_inputs, zoo.checkpointed])
@pytest.mark.parametrize("trace", [True, False])
def test_a_budget_smaller_than_one_samples_rows_chunks_the_outputs(make, trace):
    model, make_inputs = make()
    x1, x2 = make_inputs(3, 0), make_inputs(2, 1)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tiny = 3 * n_params * 8                       # rows of about one output of one sample at a time
    how = ntk_plan(model, x1, x2, trace=trace, method="autograd", max_memory=tiny)
    assert how.block < zoo_outputs(model, make_inputs)
    want = dense_ntk(model, x1, x2)
    got = empirical_ntk(model, x1, x2, trace=trace, max_memory=tiny, method="autograd")
    torch.testing.assert_close(got, traced(want) if trace else want, **F64)
    symmetric = empirical_ntk(model, x1, trace=trace, max_memory=tiny, method="autograd")
    torch.testing.assert_close(symmetric, traced(dense_ntk(model, x1)) if trace else dense_ntk(model, x1), **F64)


def zoo_outputs(model, make_inputs) -> int:
    x = make_inputs(1, 0)
    with torch.no_grad():
        out = model(**x) if isinstance(x, dict) else model(*x) if isinstance(x, tuple) else model(x)
    return out.reshape(1, -1).shape[1]


def test_rows_held_at_once_stay_within_the_budget():
    model, make_inputs = zoo.cnn()
    x = make_inputs(7, 0)
    memory = 20_000
    cost = budget.measure(model.eval(), x, None)
    chunk, block = budget.jc_plan(cost, 7, None, False, memory)
    assert budget.jc_memory(cost, chunk, block) <= memory and (chunk, block) != (7, cost.n_out)
    seen = []
    rows = make_rows(model, None, "func")

    def recording(part, b):
        out = rows(part, b)
        seen.append(sum(r.numel() * r.element_size() for r in out.values()))
        return out
    got = jacobian_kernel(recording, x, None, False, cost.n_out, chunk, block)
    torch.testing.assert_close(got, dense_ntk(model, x), **F64)
    assert 2 * max(seen) <= memory


@pytest.mark.parametrize("make", [zoo.mlp, zoo.cnn, zoo.gru, zoo.frozen, zoo.shared, zoo.buffers, zoo.two_inputs,
                                  zoo.named])
def test_ntk_vector_products_match_the_reference(make):
    model, make_inputs = make()
    x1, x2 = make_inputs(3, 0), make_inputs(2, 1)
    for trace in (True, False):
        want = dense_ntk(model, x1, x2)
        for memory in (None, 4_000):               # one block, and column blocks of a few outputs
            got = empirical_ntk(model, x1, x2, trace=trace, method="ntvp", max_memory=memory)
            torch.testing.assert_close(got, traced(want) if trace else want, **F64)
    symmetric = empirical_ntk(model, x1, trace=False, method="ntvp")
    torch.testing.assert_close(symmetric, dense_ntk(model, x1), **F64)
    assert torch.equal(symmetric, symmetric.permute(1, 0, 3, 2))


def test_auto_takes_the_cheaper_path_by_the_cost_model_and_always_the_same():
    cost = budget.ModelCost(flops=2 ** 16, saved=4096, n_params=10_000, n_out=1000, itemsize=4)
    # full kernel with many outputs: NTVP's N²·O passes beat the contraction's 2·N²·O²·P; traced: the reverse
    assert budget.ntvp_cost(cost, 32, None) < budget.jc_cost(cost, 32, None, False, 32, 1000)
    assert budget.jc_cost(cost, 32, None, True, 32, 1000) < budget.ntvp_cost(cost, 32, None)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 300)).double()
    x = torch.randn(6, 8, dtype=torch.float64)                # (the LayerNorm: no structured path)
    plans = {ntk_plan(model, x, trace=trace) for trace in (False, False, True)}
    assert {p.method for p in plans} <= {"jacobian", "ntvp"} and len(plans) == 2
    assert ntk_plan(nn.Sequential(nn.Linear(8, 3)).double(), x).method == "structured"
    full = ntk_plan(model, x, trace=False)
    assert full.method == ("ntvp" if full.ntvp_cost < full.jc_cost else "jacobian")


@pytest.mark.parametrize("make, limit", [(zoo.checkpointed, "saved tensor hooks"),
                                         (zoo.checkpointed_reentrant, "setup_context"),
                                         (zoo.gru, "")])
def test_torch_func_limits_are_translated_and_auto_uses_plain_autograd(make, limit):
    model, make_inputs = make()
    x = make_inputs(3, 0)
    with pytest.raises(ValueError, match=f"method='jacobian' uses torch.func.*{limit}.*method='autograd'"):
        empirical_ntk(model, x, method="jacobian")
    # the structured path serves the non-reentrant checkpoint (hooks, one batched reverse pass)
    assert ntk_plan(model, x).method == ("structured" if make is zoo.checkpointed else "autograd")
    assert ntk_plan(model, x, method="autograd").method == "autograd"
    torch.testing.assert_close(empirical_ntk(model, x), traced(dense_ntk(model, x)), **F64)


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("this layer has no backward pass")


class Undifferentiable(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return _NoBackward.apply(self.lin(x))


def test_a_model_no_path_can_differentiate_is_refused_when_the_recorder_is_created(tmp_path):
    x, y = torch.randn(6, 4), torch.zeros(6, dtype=torch.long)
    with pytest.raises(ValueError, match="the NTK of Undifferentiable cannot be computed on the probe.*no backward"):
        Recorder(tmp_path / "r.zarr", Undifferentiable(), (x, y), layers=[])
    assert not (tmp_path / "r.zarr").exists()
    Recorder(tmp_path / "r.zarr", Undifferentiable(), (x, y), layers=["lin"], ntk=False).close()   # no NTK: fine


def test_a_checkpointed_model_records_every_checkpoint(tmp_path):
    """The issue's example: activation checkpointing inside a Recorder (kernels on the worker thread)."""
    import xarray as xr
    model, make_inputs = zoo.checkpointed()
    x, y = make_inputs(6, 0), torch.arange(6) % 3
    kernels = []
    with Recorder(tmp_path / "r.zarr", model, (x, y), layers=["hidden.1"]) as rec:
        for step in range(3):
            kernels.append(traced(dense_ntk(model, x)))
            assert rec.checkpoint(step)
            with torch.no_grad():
                model.head.weight.mul_(1.5)
    stored = xr.open_zarr(tmp_path / "r.zarr", group="checkpoints")["ntk"].values
    np.testing.assert_allclose(stored, torch.stack(kernels).numpy(), rtol=1e-10)


def test_the_probe_memory_is_estimated_and_a_probe_too_large_is_refused_at_creation(tmp_path):
    assert budget.probe_memory(20_000, 4) == 3 * 20_000 ** 2 * 4 + budget.DEFAULT_MEMORY
    physical = __import__("os").sysconf("SC_PAGE_SIZE") * __import__("os").sysconf("SC_PHYS_PAGES")
    n = int((physical / 12) ** 0.5) + 1000        # its kernel copies alone exceed the machine's memory
    x = torch.zeros(n, 2)
    with pytest.raises(ValueError, match=rf"a probe of {n} samples needs about .* GiB per checkpoint for its NTK"):
        Recorder(tmp_path / "r.zarr", nn.Linear(2, 2), (x, torch.zeros(n, dtype=torch.long)), layers=[])
    assert not (tmp_path / "r.zarr").exists()


def test_the_structured_path_chunks_a_large_probe_to_the_budget():
    """Issue 22: a 20,000-sample probe asked 16 GB for a (O, N, N) temporary; the structured features and
    their contraction are now chunked (here 800 samples within 1 MiB)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4)).double()
    x = torch.randn(800, 5, dtype=torch.float64)
    small = empirical_ntk(model, x, method="structured", max_memory=2 ** 20)
    one_chunk = empirical_ntk(model, x, method="structured", chunk_size=800)
    torch.testing.assert_close(small, one_chunk, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make", [lambda: nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(),
                                                        nn.Linear(32, 3)),
                                  lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                                        nn.Linear(4 * 6 * 6, 3))],
                         ids=["mlp", "cnn_batchnorm"])
def test_saved_bytes_per_sample_leave_out_the_shared_weights(make):
    """The structured path's per-sample memory (``activations``) is what one more sample adds to the
    tensors autograd saves, counted by hand at batches of 1 and 2 (the weights a layer saves are
    shared): with the weights counted, a RevMLP's chunks came out 20x too small and its NTK 3x slower.
    ``saved`` (the generic paths' bound) keeps the weights."""
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(2, 6) if isinstance(model[0], nn.Linear) else torch.randn(2, 1, 8, 8)

    def saved_bytes(batch: torch.Tensor) -> int:
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(batch)
        return total[0]

    per_sample = saved_bytes(x[:2]) - saved_bytes(x[:1])
    cost = budget.measure(model, x, None)
    assert cost.activations == per_sample > 0 and cost.saved > per_sample   # saved: the later layers' weights too
