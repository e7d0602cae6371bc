"""Background NTKs come from a snapshot only where the snapshot is faithful: a model whose forward pass
reads state its deep copy does not own (a closure over another module, a global tensor, a class
attribute, a hook reading an outside tensor) gets every kernel at once; a model whose state the copy
does own keeps the worker thread. Either way each stored kernel equals the dense ``jacrev`` NTK of the
model as it was at that checkpoint, although the state changes right after ``checkpoint`` returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dynamics import Recorder, open_run

torch.manual_seed(0)
OTHER = nn.Linear(6, 6).double()            # a module outside the model, reached through a closure
SCALE = torch.ones(6, dtype=torch.float64)   # a global tensor read in forward


class _Base(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.a, self.b = nn.Linear(4, 6).double(), nn.Linear(6, 2).double()

    def forward(self, x):
        return self.b(self.middle(self.a(x)))


class _Closure(_Base):                       # the example
    def __init__(self) -> None:
        super().__init__()
        self.f = lambda h: torch.tanh(OTHER(h))

    def middle(self, h):
        return self.f(h)


class _Global(_Base):
    def middle(self, h):
        return torch.tanh(h * SCALE)


class _ClassAttribute(_Base):
    shared = OTHER

    def middle(self, h):
        return torch.tanh(self.shared(h))


class _Hook(_Base):
    def __init__(self) -> None:
        super().__init__()
        self.a.register_forward_hook(lambda module, inputs, out: out * SCALE)

    def middle(self, h):
        return torch.tanh(h)


class _BoundMethod(_Base):                   # a bound method: deepcopy copies its module
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(6, 6).double().forward

    def middle(self, h):
        return torch.tanh(self.f(h))


class _PlainList(_Base):                     # modules and tensors in plain attributes: copied
    def __init__(self) -> None:
        super().__init__()
        self.extra = [nn.Linear(6, 6).double()]
        self.mask = torch.linspace(0.5, 1.5, 6, dtype=torch.float64)

    def middle(self, h):
        return torch.tanh(self.extra[0](h) * self.mask)


def _replace_outside(step: int) -> None:
    OTHER.weight = nn.Parameter(torch.randn(6, 6, dtype=torch.float64))
    SCALE.copy_(torch.randn(6, dtype=torch.float64))


def _update_outside_in_place(step: int) -> None:
    with torch.no_grad():
        OTHER.weight.mul_(-1.5).add_(0.1)
        SCALE.mul_(-1.2)


def _update_own_state(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.9).add_(0.01)
        for value in (*getattr(model, "extra", []), getattr(model, "f", None)):
            owner = getattr(value, "__self__", value)
            if isinstance(owner, nn.Module):
                for p in owner.parameters():
                    p.mul_(-1.1)
        if hasattr(model, "mask"):
            model.mask.mul_(1.3)


def _dense_ntk(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Σ_o J_o J_oᵀ from the dense Jacobian of the outputs with respect to the registered parameters."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(model, p, (x,)))(params)
    dense = torch.cat([j.reshape(x.shape[0], 2, -1) for j in jac.values()], dim=-1)
    return torch.einsum("nop,mop->nm", dense, dense).detach().numpy()


def _record(path, model: nn.Module, change, steps: int = 4):
    """Checkpoint ``steps`` times, changing the state with ``change(step)`` right after each call returns;
    (stored kernels, dense references taken just before each call, rec.ntk_at_once, whether a kernel
    waited for the worker thread)."""
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.randint(0, 2, (7,), generator=torch.Generator().manual_seed(3))
    references, used_worker = [], False
    with Recorder(path, model, (x, y), layers=[]) as rec:
        for step in range(steps):
            references.append(_dense_ntk(model, x))
            assert rec.checkpoint(step)
            used_worker |= bool(rec._outbox.pending)
            change(step)
        reason = rec.ntk_at_once
    return open_run(path)["checkpoints"]["ntk"].values, references, reason, used_worker


@pytest.mark.parametrize("model_type, outside", [(_Closure, _replace_outside), (_Closure, _update_outside_in_place),
                                                 (_Global, _update_outside_in_place),
                                                 (_ClassAttribute, _replace_outside), (_Hook, _replace_outside)])
def test_a_snapshot_that_reads_outside_state_falls_back_to_kernels_computed_at_once(tmp_path, model_type, outside):
    model = model_type()
    kernels, references, reason, used_worker = _record(tmp_path / "r.zarr", model,
                                                       lambda step: (outside(step), _update_own_state(model)))
    assert not used_worker and "does not own all it reads" in reason
    for step, reference in enumerate(references):
        np.testing.assert_allclose(kernels[step], reference, rtol=1e-10, atol=1e-12, err_msg=f"step {step}")
    assert not np.allclose(references[0], references[-1])       # the state did change


@pytest.mark.parametrize("model_type", [_BoundMethod, _PlainList])
def test_a_snapshot_that_owns_what_it_reads_keeps_the_worker_thread(tmp_path, model_type):
    model = model_type()
    kernels, references, reason, used_worker = _record(tmp_path / "r.zarr", model, lambda step: _update_own_state(model))
    assert reason is None and used_worker
    for step, reference in enumerate(references):
        np.testing.assert_allclose(kernels[step], reference, rtol=1e-10, atol=1e-12, err_msg=f"step {step}")
    assert not np.allclose(references[0], references[-1])


def test_why_kernels_are_computed_at_once_is_reported(tmp_path):
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.zeros(5, dtype=torch.long)
    for options, reason in (({"ntk": False}, "ntk=False"), ({"ntk_background": False}, "ntk_background=False")):
        with Recorder(tmp_path / f"{reason}.zarr", _PlainList(), (x, y), layers=[], **options) as rec:
            assert rec.ntk_at_once == reason
