"""The Recorder's NTK computed in the background (``ntk_background=True``, the default): the kernel of
each checkpoint is that of the parameters at its step — equal to a dense ``jacrev`` NTK and bit-identical
to computing it at once — although training changes the parameters in place right after
``checkpoint`` returns; its errors surface from the next call, and nothing of the run is lost."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from dynamics import Recorder, open_run
from dynamics.errors import StoreError
from dynamics.pending import MAX_PENDING
from dynamics.models import MLP


def _dense_ntk(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> np.ndarray:
    """Σ_o J_o J_oᵀ from the dense Jacobian of the model's outputs at the given parameters."""
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(model, p, (x,)))(params)
    n = x.shape[0]
    dense = torch.cat([j.reshape(n, j.shape[1], -1) for j in jac.values()], dim=-1)
    return torch.einsum("nop,mop->nm", dense, dense).numpy()


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rec: Recorder, steps: int,
           snapshots: dict[int, dict[str, torch.Tensor]] | None = None) -> None:
    """SGD on ``model``; the parameters change in place right after each ``checkpoint`` returns."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        rec.log(step, loss=loss.item())
        if rec.checkpoint(step) and snapshots is not None:
            snapshots[step] = {k: v.detach().clone() for k, v in model.named_parameters()}
        opt.zero_grad()
        loss.backward()
        opt.step()


def _assert_every_kernel_is_dense(path, model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """Record ``steps`` SGD steps (a checkpoint at each, no representations) into ``path``; each stored
    NTK equals the dense Jacobian's at that step's parameters."""
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    with Recorder(path, model, (x, y), layers=[]) as rec:
        _train(model, x, y, rec, steps, snapshots)
    stored = open_run(path)["checkpoints"]["ntk"].values
    for step in range(steps):
        np.testing.assert_allclose(stored[step], _dense_ntk(model, snapshots[step], x), rtol=1e-12, atol=1e-12)


def _data(dtype=torch.float64):
    gen = torch.Generator().manual_seed(3)
    return torch.randn(10, 5, generator=gen, dtype=dtype), torch.randint(0, 3, (10,), generator=gen)


def test_background_kernels_are_the_dense_ntk_of_each_step_and_bit_identical_to_synchronous(tmp_path):
    x, y = _data()
    kernels = {}
    for background in (True, False):
        model = MLP(5, 7, 2, 3, seed=4, dtype=torch.float64)
        snapshots: dict[int, dict[str, torch.Tensor]] = {}
        path = tmp_path / f"bg{background}.zarr"
        with Recorder(path, model, (x, y), ntk_background=background) as rec:
            _train(model, x, y, rec, 12, snapshots)
        run = open_run(path)
        assert run["checkpoints"]["checkpoint_step"].values.tolist() == list(range(12))
        assert run["metrics"]["loss"].sizes["step"] == 12
        kernels[background] = run["checkpoints"]["ntk"].values
        for i, step in enumerate(run["checkpoints"]["checkpoint_step"].values):   # the parameters of that step
            np.testing.assert_allclose(kernels[background][i], _dense_ntk(model, snapshots[int(step)], x),
                                       rtol=1e-12, atol=1e-12)
        assert not np.array_equal(kernels[background][0], kernels[background][-1])   # training moved them
    assert np.array_equal(kernels[True], kernels[False])      # bit-identical to computing it at once


def test_the_issue_11_hardtanh_model_gets_its_true_kernel_in_the_background(tmp_path):
    """Linear(4,6) → Hardtanh(inplace=True) → Linear(6,2), samples 4–7 beyond the clip: the background
    kernel (structured path with its per-chunk checks) equals the dense Jacobian's at every step."""
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(4, 6), nn.Hardtanh(inplace=True), nn.Linear(6, 2)).double()
    gen = torch.Generator().manual_seed(100)
    x = torch.randn(8, 4, generator=gen, dtype=torch.float64) * 0.05
    x[4:] *= 100
    with torch.no_grad():
        hit = (model[0](x).abs() > 1).any(1)
    assert not hit[:4].any() and hit[4:].all()
    y = torch.randint(0, 2, (8,), generator=gen)
    _assert_every_kernel_is_dense(tmp_path / "h.zarr", model, x, y, 6)


#: Opened by the tests; a _FailsWithGrad kernel waits for it, so that checkpoints stay pending.
GATE = threading.Event()


class _FailsWithGrad(nn.Module):
    """A linear model whose forward under autograd (the NTK) waits for GATE and then raises when
    ``fail`` is set; under no_grad (the representations) it never waits nor fails. ``fail`` is part
    of the snapshot taken at ``checkpoint``."""

    def __init__(self):
        super().__init__()
        self.lin, self.fail = nn.Linear(5, 3), False

    def forward(self, x):
        if torch.is_grad_enabled():
            assert GATE.wait(timeout=60)
            if self.fail:
                raise RuntimeError("kernel exploded")
        return self.lin(x)


#: One gate per checkpoint (by the model's ``tag`` at that checkpoint), opened by the tests.
GATES: dict[int, threading.Event] = {}


class _Gated(nn.Module):
    """A linear model whose NTK (the forward pass under autograd) waits for ``GATES[tag]`` (unless
    ``tag`` is None) and then raises when ``fail`` is set; ``tag`` and ``fail`` are part of the
    snapshot taken at ``checkpoint``, so each checkpoint's kernel is held back, released and made to
    fail by the test alone."""

    def __init__(self):
        super().__init__()
        self.lin, self.tag, self.fail = nn.Linear(5, 3), None, False

    def forward(self, x):
        if torch.is_grad_enabled():
            if self.tag is not None:
                assert GATES[self.tag].wait(timeout=60), f"gate {self.tag} never opened"
            if self.fail:
                raise RuntimeError(f"kernel {self.tag} exploded")
        return self.lin(x)


def _held_checkpoint(rec: Recorder, model: _Gated, step: int, fail: bool = False) -> threading.Event:
    """Store a checkpoint at ``step`` whose kernel waits for the returned gate (and then fails when
    ``fail``); the call returns without waiting for it."""
    GATES[step] = gate = threading.Event()
    model.tag, model.fail = step, fail
    assert rec.checkpoint(step)
    model.tag, model.fail = None, False
    return gate


def _kernel_of(rec: Recorder, step: int):
    """The Future of the kernel of the pending checkpoint at ``step``."""
    return next(p.kernel for p in rec._outbox.pending if p.step == step)


def test_a_failed_background_kernel_raises_from_the_first_call_after_it_finished(tmp_path):
    """The kernel of checkpoint 1 fails on the worker thread. While it is held back, calls go on without
    waiting; once it has finished (the test waits for its Future), the very next call — a ``log`` —
    raises its error (a note names step 1), keeping that call's row. Only checkpoint 1 is dropped;
    the later pending checkpoint 2 is committed; the store ends "failed" although the caller caught
    the error."""
    x, y = _data(torch.float32)
    model = _Gated()
    path = tmp_path / "f.zarr"
    rec = Recorder(path, model, (x, y), layers=["lin"])
    rec.log(0, loss=0.0)
    assert rec.checkpoint(0)
    rec.flush()                                    # its kernel (on the worker thread too) is done
    rec.log(1, loss=1.0)
    gate1 = _held_checkpoint(rec, model, 1, fail=True)
    rec.log(2, loss=2.0)                           # the kernel is not done: nothing to raise yet
    gate2 = _held_checkpoint(rec, model, 2)
    assert rec.checkpoint_steps == [0, 1, 2]
    gate1.set()
    assert isinstance(_kernel_of(rec, 1).exception(timeout=60), RuntimeError)   # finished, failed
    with pytest.raises(RuntimeError, match="kernel 1 exploded") as info:
        rec.log(3, loss=3.0)
    assert "checkpoint at step 1" in "".join(getattr(info.value, "__notes__", []))
    assert rec.checkpoint_steps == [0, 2]          # only step 1 is dropped
    gate2.set()
    rec.log(4, loss=4.0)
    assert rec.checkpoint(4)
    rec.close()
    run = open_run(path)
    assert run.attrs["status"] == "failed" and "kernel 1 exploded" in run.attrs["error"]
    assert "step 1" in run.attrs["error"]
    assert run["checkpoints"]["checkpoint_step"].values.tolist() == [0, 2, 4]
    np.testing.assert_array_equal(run["metrics"]["loss"].values, [0.0, 1.0, 2.0, 3.0, 4.0])   # every row


def test_checkpoints_wait_up_to_max_pending_and_are_committed_in_step_order(tmp_path):
    """With every kernel held back, MAX_PENDING checkpoints are stored without waiting (had one waited,
    its held kernel would never finish); the next one waits for the oldest only, which is then
    committed; the rest are committed in step order once released — also when released newest first."""
    x, y = _data(torch.float32)
    model = _Gated()
    path = tmp_path / "q.zarr"
    rec = Recorder(path, model, (x, y), layers=[], schedule=lambda step: step % 2 == 1)
    gates = [_held_checkpoint(rec, model, step) for step in (1, 3, 5, 7)]
    assert MAX_PENDING == 4
    for step in (8, 10):
        rec.log(step, loss=float(step))
        assert not rec.checkpoint(step)            # not stored: does not wait either
    assert [p.step for p in rec._outbox.pending] == [1, 3, 5, 7]
    assert rec.checkpoint_steps == [1, 3, 5, 7]
    gates[0].set()                                 # only the oldest kernel may finish
    gates.append(_held_checkpoint(rec, model, 11))   # the queue is full: waits for the kernel of step 1
    assert [p.step for p in rec._outbox.pending] == [3, 5, 7, 11]
    rec._writer.wait()
    assert open_run(path)["checkpoints"]["checkpoint_step"].values.tolist() == [1]
    for gate in reversed(gates):
        gate.set()
    rec.close()
    run = open_run(path)
    assert run.attrs["status"] == "complete"
    assert run["checkpoints"]["checkpoint_step"].values.tolist() == [1, 3, 5, 7, 11]
    np.testing.assert_array_equal(run["metrics"]["step"].values, [8, 10])


def test_a_held_back_failed_kernel_is_raised_by_the_stored_checkpoint_max_pending_later(tmp_path):
    """The bound when no call comes after the kernel finished: the kernel of step 1 fails but is held
    back while the stored checkpoints 2, 3, 4 return without waiting; the stored checkpoint 5 — the
    MAX_PENDING-th after it — waits for it and raises its error (notes name step 1, dropped, and step 5,
    not stored either), whether or not the kernel finished before that call. Step 5 may be stored
    again; the store ends "failed" with only step 1 missing."""
    x, y = _data(torch.float32)
    model = _Gated()
    path = tmp_path / "b.zarr"
    rec = Recorder(path, model, (x, y), layers=[])
    gates = [_held_checkpoint(rec, model, 1, fail=True)]
    gates += [_held_checkpoint(rec, model, step) for step in (2, 3, 4)]
    assert rec.checkpoint_steps == [1, 2, 3, 4]
    gates[0].set()                                 # kernel 1 may now fail; kernels 2-4 stay held back
    with pytest.raises(RuntimeError, match="kernel 1 exploded") as info:
        rec.checkpoint(5)
    notes = "\n".join(info.value.__notes__)
    assert "the checkpoint at step 1" in notes and "(raised by the checkpoint at step 5, which was not stored)" in notes
    assert rec.checkpoint_steps == [2, 3, 4]
    for gate in gates[1:]:
        gate.set()
    assert rec.checkpoint(5)
    rec.close()
    run = open_run(path)
    assert run.attrs["status"] == "failed" and "step 1" in run.attrs["error"]
    assert run["checkpoints"]["checkpoint_step"].values.tolist() == [2, 3, 4, 5]


def test_rows_are_written_while_a_kernel_is_pending(tmp_path):
    """A pending kernel holds no row back: rows count toward flush_every and are committed while the
    checkpoint waits; the checkpoint is committed once its kernel is done, in step order."""
    x, y = _data(torch.float32)
    model = _FailsWithGrad()
    path = tmp_path / "p.zarr"
    GATE.set()
    rec = Recorder(path, model, (x, y), layers=[], flush_every=3)
    rec.checkpoint(0)
    rec.flush()
    GATE.clear()
    try:
        rec.log(1, loss=1.0)
        assert rec.checkpoint(1)                   # pending: its kernel waits for the gate
        for step in range(2, 8):
            rec.log(step, loss=float(step))
        rec._writer.wait()
        run = open_run(path)
        assert run["metrics"].sizes["step"] == 6   # two blocks of flush_every rows, steps 1..6
        assert run["checkpoints"]["checkpoint_step"].values.tolist() == [0]   # step 1 still waits
    finally:
        GATE.set()
    rec.close()
    run = open_run(path)
    assert run.attrs["status"] == "complete"
    assert run["checkpoints"]["checkpoint_step"].values.tolist() == [0, 1]
    np.testing.assert_array_equal(run["metrics"]["step"].values, np.arange(1, 8))


def test_flush_secs_applies_to_rows_and_to_a_pending_checkpoint(tmp_path):
    """With the kernel of checkpoint 1 held back, a row older than flush_secs is written by the next
    log call, and that call waits for the checkpoint, which has waited flush_secs too."""
    x, y = _data(torch.float32)
    model = _FailsWithGrad()
    path = tmp_path / "s.zarr"
    GATE.set()
    rec = Recorder(path, model, (x, y), layers=[], flush_every=10 ** 6, flush_secs=0.2)
    rec.checkpoint(0)
    rec.flush()
    GATE.clear()
    opener = threading.Timer(0.8, GATE.set)
    try:
        rec.log(1, loss=1.0)
        assert rec.checkpoint(1)
        opener.start()
        rec.log(2, loss=2.0)
        time.sleep(0.3)
        rec.log(3, loss=3.0)                       # rows 1-3 are due; the checkpoint too: waits for the gate
        assert GATE.is_set()
        rec._writer.wait()
        run = open_run(path)
        assert run["checkpoints"]["checkpoint_step"].values.tolist() == [0, 1]
        np.testing.assert_array_equal(run["metrics"]["step"].values, [1, 2, 3])
    finally:
        opener.cancel()
        GATE.set()
    rec.close()


@pytest.mark.parametrize("finish", ["close", "flush", "exit"])
def test_a_kernel_that_fails_at_the_end_marks_the_store_failed_and_writes_every_row(tmp_path, finish):
    x, y = _data(torch.float32)
    model = _FailsWithGrad()
    path = tmp_path / "e.zarr"
    GATE.set()
    rec = Recorder(path, model, (x, y), layers=[])
    rec.checkpoint(0)
    model.fail = True
    for step in range(1, 4):
        rec.log(step, loss=float(step))
    assert rec.checkpoint(3)
    if finish == "exit":
        with pytest.raises(RuntimeError, match="kernel exploded"):
            with rec:
                pass
    elif finish == "flush":
        with pytest.raises(RuntimeError, match="kernel exploded"):
            rec.flush()
        rec.flush()                                # the rows were kept and are written now
        rec.close()                                # the caller caught the error: no second raise
    else:
        with pytest.raises(RuntimeError, match="kernel exploded"):
            rec.close()
    run = open_run(path)
    assert run.attrs["status"] == "failed" and "kernel exploded" in run.attrs["error"]
    assert run["checkpoints"]["checkpoint_step"].values.tolist() == [0]
    np.testing.assert_array_equal(run["metrics"]["loss"].values, [1.0, 2.0, 3.0])


class _Uncopyable(nn.Module):
    """Holds a lock: ``copy.deepcopy`` fails, so no snapshot can be taken."""

    def __init__(self):
        super().__init__()
        self.lin, self.lock = nn.Linear(5, 3).double(), threading.Lock()

    def forward(self, x):
        return self.lin(x)


def test_a_model_that_cannot_be_copied_gets_its_kernel_at_once(tmp_path):
    x, y = _data()
    model = _Uncopyable()
    _assert_every_kernel_is_dense(tmp_path / "u.zarr", model, x, y, 4)


def test_a_dtype_change_is_refused_at_the_call_while_a_kernel_is_pending(tmp_path):
    x, y = _data(torch.float32)
    model = MLP(5, 6, 1, 3, seed=1)
    path = tmp_path / "d.zarr"
    rec = Recorder(path, model, (x, y), layers=[])
    rec.checkpoint(0)
    rec.checkpoint(1)                              # pending in the background
    model.double()
    with pytest.raises(StoreError, match="checkpoints/ntk is stored as float32, got float64"):
        rec.checkpoint(2)
    model.float()
    assert rec.checkpoint(2)
    rec.close()
    assert open_run(path)["checkpoints"]["checkpoint_step"].values.tolist() == [0, 1, 2]


def test_a_dtype_change_is_refused_against_the_layout_of_checkpoints_still_pending(tmp_path):
    """Nothing is committed yet (the kernels of steps 0 and 1 are held back): a checkpoint of the model
    in float64 is refused at its call by the layout the pending float32 checkpoints will create."""
    x, y = _data(torch.float32)
    model = _Gated()
    path = tmp_path / "a.zarr"
    rec = Recorder(path, model, (x, y), layers=["lin"])
    gates = [_held_checkpoint(rec, model, step) for step in (0, 1)]
    model.double()
    with pytest.raises(StoreError, match="is stored as float32, got float64"):
        rec.checkpoint(2)
    model.float()
    assert rec.checkpoint(2)
    for gate in gates:
        gate.set()
    rec.close()
    assert open_run(path)["checkpoints"]["checkpoint_step"].values.tolist() == [0, 1, 2]


def test_every_kernel_that_fails_before_close_is_named_and_the_first_is_raised(tmp_path):
    x, y = _data(torch.float32)
    model = _Gated()
    path = tmp_path / "c.zarr"
    rec = Recorder(path, model, (x, y), layers=[])
    gates = [_held_checkpoint(rec, model, step, fail=step != 2) for step in (1, 2, 3)]
    for gate in gates:
        gate.set()
    with pytest.raises(RuntimeError, match="kernel 1 exploded"):
        rec.close()
    run = open_run(path)
    assert run.attrs["status"] == "failed"
    assert "kernel 1 exploded" in run.attrs["error"] and "kernel 3 exploded" in run.attrs["error"]
    assert run["checkpoints"]["checkpoint_step"].values.tolist() == [2]


def test_ntk_background_must_be_a_bool(tmp_path):
    x, y = _data(torch.float32)
    with pytest.raises(TypeError, match="ntk_background must be True or False, got 1"):
        Recorder(tmp_path / "b.zarr", MLP(5, 6, 1, 3), (x, y), ntk_background=1)



class _Noise(nn.Module):
    """Adds Gaussian noise from the global generator in train *and* eval mode (a noise layer that ignores
    the train/eval flag)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + 1e-3 * torch.randn_like(h)


def _noisy_run(path, background: bool, noise: bool) -> tuple[list[float], np.ndarray, bool]:
    """Train an MLP (with a noise layer when ``noise``) whose loop also draws from torch's global
    generator (shuffling), checkpointing every step; returns the losses, the stored NTKs and whether
    the worker thread ever took a kernel."""
    torch.manual_seed(11)
    layers = [nn.Linear(5, 16), nn.Tanh(), *([_Noise()] if noise else []), nn.Dropout(0.3), nn.Linear(16, 3)]
    model = nn.Sequential(*layers).double()
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses, used_worker = [], False
    with Recorder(path, model, (x[:6], y[:6]), ntk_background=background) as rec:
        for step in range(8):
            order = torch.randperm(10)                   # the loop's own draws from the global generator
            loss = torch.nn.functional.cross_entropy(model(x[order]), y[order])
            rec.log(step, loss=loss.item())
            rec.checkpoint(step)
            used_worker |= bool(rec._outbox.pending)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses, open_run(path)["checkpoints"]["ntk"].values, used_worker


@pytest.mark.parametrize("noise", [True, False])
def test_a_model_that_draws_random_numbers_keeps_the_runs_random_stream(tmp_path, noise):
    """The NTK runs in eval mode (dropout off, no draws), but a noise layer that ignores the flag draws
    from the global generator in the NTK's forward passes: on a worker thread those draws would interleave
    with the loop's at moments set by thread timing. Such a model gets every kernel at once, so the run —
    losses and kernels — is bit-identical to ``ntk_background=False``; without the noise layer (dropout in
    training mode only) the kernels go to the worker thread and the run is bit-identical too."""
    background = _noisy_run(tmp_path / "bg.zarr", True, noise)
    at_once = _noisy_run(tmp_path / "now.zarr", False, noise)
    assert background[0] == at_once[0]
    np.testing.assert_array_equal(background[1], at_once[1])
    assert background[2] is (not noise) and at_once[2] is False


def test_kernel_worker_learns_whether_the_forward_pass_draws_random_numbers():
    from dynamics.ntk.background import KernelWorker

    x = torch.randn(4, 3, dtype=torch.float64)
    for noise in (False, True):
        model = nn.Sequential(nn.Linear(3, 4), *([_Noise()] if noise else []), nn.Linear(4, 2)).double()
        worker = KernelWorker()
        try:
            assert worker.submit(model, x, x[:2]) is None   # not known yet: computed at once
            first = worker.kernel_now(model, x)
            future = worker.submit(model, x, x[:2])
            assert (future is None) is noise
            if future is not None:
                np.testing.assert_array_equal(future.result().numpy(), first.numpy())
        finally:
            worker.shutdown()
