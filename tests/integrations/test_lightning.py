"""DynamicsCallback with a real Lightning Trainer (CPU, float64): every recorded number against a plain
PyTorch loop that replays the same updates, resume from Lightning's own checkpoint against an
uninterrupted run, KernelGN as a LightningModule's optimiser, and the refusals."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
import xarray as xr
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.func import functional_call

import dynamics
from dynamics.gauss_newton import KernelGN
from dynamics.integrations.lightning import DynamicsCallback
from dynamics.models import MLP
from dynamics.schedules import every
from lit_models import BATCH, CLASSES, FEATURES, Classifier, GNClassifier, cross_entropy, data, loader, trainer

EPOCHS = 2


def accuracy(module, x, y) -> dict:
    return {"test_acc": float((module(x).argmax(1) == y).double().mean())}


def plain_loop(x, y, held, steps, optimizer="adam", lr=0.05):
    """The same updates as Lightning's automatic optimisation, written out: per step the batch loss
    before/after, the held-out and next batch before/after, ‖∇L‖, and the parameters after each step."""
    net = MLP(FEATURES, 16, 2, CLASSES, seed=0, dtype=torch.float64)
    opt = torch.optim.Adam(net.parameters(), lr=lr) if optimizer == "adam" else torch.optim.SGD(net.parameters(), lr=lr)
    batches = [slice(i, i + BATCH) for i in range(0, len(x), BATCH)]
    order = [batches[i % len(batches)] for i in range(steps + 1)]
    ce = nn.functional.cross_entropy

    def loss_at(params, b):
        with torch.no_grad():
            return float(ce(functional_call(net, params, (x[b],)), y[b]))

    params = [{k: v.detach().clone() for k, v in net.named_parameters()}]
    rows = []
    for t in range(1, steps + 1):
        b = order[t - 1]
        before = params[-1]
        loss = ce(net(x[b]), y[b])
        opt.zero_grad()
        loss.backward()
        grad_norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in net.parameters()))
        opt.step()
        after = {k: v.detach().clone() for k, v in net.named_parameters()}
        params.append(after)
        rows.append(dict(loss=float(loss.detach()), loss_after=loss_at(after, b), other_loss=float(ce(net_at(net, before, held[0]), held[1])),
                         other_loss_after=float(ce(net_at(net, after, held[0]), held[1])),
                         next_loss=loss_at(before, order[t]) if t < steps else math.nan,
                         next_loss_after=loss_at(after, order[t]) if t < steps else math.nan, grad_norm=grad_norm,
                         lr=lr))
    return rows, params


def net_at(net, params, x):
    with torch.no_grad():
        return functional_call(net, params, (x,))


def test_every_number_matches_a_plain_loop(tmp_path):
    x, y = data()
    held = (x[:10] + 0.5, y[:10])
    cb = DynamicsCallback(tmp_path / "lit.zarr", probe=(x[:8], y[:8]), held_out=held, next_batch=True,
                          schedule=every(3), evaluate=lambda m: accuracy(m, x, y), layers=[])
    module = Classifier()
    trainer(callbacks=[cb], max_epochs=EPOCHS).fit(module, loader(x, y))
    steps = EPOCHS * len(x) // BATCH
    rows, params = plain_loop(x, y, held, steps)
    tree = dynamics.open_run(tmp_path / "lit.zarr")
    assert tree.attrs["status"] == "complete"
    metrics = tree["metrics"].to_dataset()
    np.testing.assert_array_equal(metrics["step"].values, np.arange(1, steps + 1))
    np.testing.assert_allclose(metrics["epoch"].values, np.arange(1, steps + 1) / (len(x) // BATCH))
    for name in rows[0]:
        np.testing.assert_allclose(metrics[name].values, [r[name] for r in rows], rtol=1e-10, atol=1e-13,
                                   err_msg=name)
    # the user's own self.log saw the training loss, never a loss of the callback's extra forwards
    assert float(module.trainer.callback_metrics["train_loss"]) == pytest.approx(rows[-1]["loss"], rel=1e-12)
    checkpoints = tree["checkpoints"].to_dataset()
    assert checkpoints["checkpoint_step"].values.tolist() == [0, 3, 6]
    stored = tree["params"].to_dataset()
    for c, step in enumerate([0, 3, 6]):
        for name, value in params[step].items():
            stored_name = "net__" + name.replace(".", "__")   # the LightningModule's own parameter names
            np.testing.assert_allclose(stored[stored_name].values[c], value.numpy(), rtol=1e-12, atol=1e-14)
        net = MLP(FEATURES, 16, 2, CLASSES, seed=0, dtype=torch.float64)
        expected = float((net_at(net, params[step], x).argmax(1) == y).double().mean())
        assert checkpoints["test_acc"].values[c] == expected


def test_extra_forwards_leave_training_unchanged_with_dropout_and_batchnorm(tmp_path):
    """Dropout and batch normalisation in training mode: a fit with every extra forward ends with the
    same parameters and running statistics, bit for bit, as one without the callback; loss_after
    replays the step's own dropout masks (so without an update it would equal the loss)."""
    x, y = data(1)
    finals = []
    for with_callback in (False, True):
        L.seed_everything(3, verbose=False)
        module = Classifier(optimizer="sgd", lr=0.1, noisy=True)
        callbacks = [DynamicsCallback(tmp_path / "noisy.zarr", probe=(x[:8], y[:8]), held_out=(x[:12], y[:12]),
                                      next_batch=True, schedule=every(4), layers=[])] if with_callback else []
        trainer(callbacks=callbacks, max_epochs=1).fit(module, loader(x, y))
        finals.append({k: v.clone() for k, v in module.state_dict().items()})
    assert finals[0].keys() == finals[1].keys()
    for name in finals[0]:
        assert torch.equal(finals[0][name], finals[1][name]), name
    # lr = 0: no update, so the loss after must equal the loss of the step's own forward (same masks)
    L.seed_everything(3, verbose=False)
    module = Classifier(optimizer="sgd", lr=0.0, noisy=True)
    cb = DynamicsCallback(tmp_path / "still.zarr", probe=(x[:8], y[:8]), schedule=every(100), layers=[])
    trainer(callbacks=[cb], max_epochs=1).fit(module, loader(x, y))
    metrics = dynamics.open_run(tmp_path / "still.zarr")["metrics"].to_dataset()
    np.testing.assert_array_equal(metrics["loss_after"].values, metrics["loss"].values)


class Crash(L.Callback):
    def __init__(self, hook: str, step: int) -> None:
        self.hook, self.step = hook, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.hook == "start" and trainer.global_step == self.step:
            raise RuntimeError("simulated crash")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.hook == "end" and trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A 3-epoch run (12 steps) recorded without interruption: the reference of the resume tests."""
    x, y = data()
    path = tmp_path_factory.mktemp("whole") / "run.zarr"
    cb = DynamicsCallback(path, probe=(x[:8], y[:8]), held_out=(x[:10] + 0.5, y[:10]), next_batch=True,
                          schedule=every(3), evaluate=lambda m: accuracy(m, x, y))
    trainer(callbacks=[cb], max_epochs=3).fit(Classifier(), loader(x, y))
    return dynamics.open_run(path)


@pytest.mark.parametrize("hook, crash_step, first", [("end", 10, False), ("start", 8, True)],
                         ids=["run-went-on-past-the-checkpoint", "crash-right-after-the-checkpoint"])
def test_resume_from_lightning_checkpoint_equals_uninterrupted_run(tmp_path, uninterrupted, hook, crash_step, first):
    x, y = data()
    path = tmp_path / "run.zarr"

    def callback():
        return DynamicsCallback(path, probe=(x[:8], y[:8]), held_out=(x[:10] + 0.5, y[:10]), next_batch=True,
                                schedule=every(3), evaluate=lambda m: accuracy(m, x, y))

    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, save_on_train_epoch_end=True)
    crash = Crash(hook, crash_step)
    callbacks = [crash, callback()] if first else [callback(), crash]
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer(callbacks=[*callbacks, saver], max_epochs=3, enable_checkpointing=True).fit(Classifier(), loader(x, y))
    crashed = dynamics.open_run(path)
    assert crashed.attrs["status"] == "failed" and "simulated crash" in crashed.attrs["error"]
    ckpt = tmp_path / "ckpt" / "epoch=1-step=8.ckpt"
    assert ckpt.is_file()
    trainer(callbacks=[callback()], max_epochs=3).fit(Classifier(), loader(x, y), ckpt_path=ckpt)
    resumed = dynamics.open_run(path)
    assert resumed.attrs["status"] == "complete"
    for group in ("metrics", "checkpoints", "params"):
        xr.testing.assert_identical(resumed[group].to_dataset(), uninterrupted[group].to_dataset())


def test_kernel_gn_as_lightning_optimiser_matches_its_own_loop(tmp_path):
    """The manual-optimisation recipe: Lightning counts the GN updates (global_step), the store gets ρ
    and the loss before/after, and the parameters equal KernelGN stepped by hand on the same batches."""
    x, y = data(2)
    cb = DynamicsCallback(tmp_path / "gn.zarr", probe=(x[:8], y[:8]), loss_fn=cross_entropy, schedule=every(4),
                          layers=[])
    module = GNClassifier(lr=0.5)
    trainer(callbacks=[cb], max_epochs=1).fit(module, loader(x, y))
    assert module.trainer.global_step == len(x) // BATCH
    net = MLP(FEATURES, 16, 2, CLASSES, seed=0, dtype=torch.float64)
    gn = KernelGN(net, lr=0.5, loss="ce")
    reports, after = [], []
    for i in range(0, len(x), BATCH):
        reports.append(gn.step(x[i:i + BATCH], y[i:i + BATCH]))
        with torch.no_grad():
            after.append(float(nn.functional.cross_entropy(net(x[i:i + BATCH]), y[i:i + BATCH])))
    for name, value in net.named_parameters():
        np.testing.assert_allclose(module.net.get_parameter(name).detach().numpy(), value.detach().numpy(),
                                   rtol=1e-12, atol=1e-14)
    metrics = dynamics.open_run(tmp_path / "gn.zarr")["metrics"].to_dataset()
    np.testing.assert_allclose(metrics["loss"].values, [r.loss for r in reports], rtol=1e-12)
    np.testing.assert_allclose(metrics["gn_residual"].values, [r.residual for r in reports], rtol=1e-6, atol=1e-14)
    np.testing.assert_allclose(metrics["loss_after"].values, after, rtol=1e-12)
    np.testing.assert_allclose(metrics["lr"].values, 0.5)
    assert "grad_norm" not in metrics   # a GN step has no gradient to measure


def test_refusals_come_at_construction_or_at_the_start_of_fit(tmp_path):
    x, y = data()
    with pytest.raises(TypeError, match="resume"):
        DynamicsCallback(tmp_path / "a.zarr", probe=(x[:8], y[:8]), resume=True)
    with pytest.raises(TypeError, match="probe"):
        DynamicsCallback(tmp_path / "a.zarr", probe=x[:8])
    with pytest.raises(TypeError, match="loss_after"):
        DynamicsCallback(tmp_path / "a.zarr", probe=(x[:8], y[:8]), loss_after=1)
    with pytest.raises(ValueError, match="loggers"):
        DynamicsCallback(tmp_path / "a.zarr", probe=(x[:8], y[:8]), loggers="tensorboard")
    with pytest.raises(TypeError, match="neither a mirror"):
        DynamicsCallback(tmp_path / "a.zarr", probe=(x[:8], y[:8]), loggers=[object()])
    cb = DynamicsCallback(tmp_path / "b.zarr", probe=(x[:8], y[:8]))
    with pytest.raises(ValueError, match="accumulate_grad_batches=2"):
        trainer(callbacks=[cb], max_epochs=1, accumulate_grad_batches=2).fit(Classifier(), loader(x, y))
    cb = DynamicsCallback(tmp_path / "c.zarr", probe=(x[:8], y[:8]))   # loss_after=True needs loss_fn here
    with pytest.raises(ValueError, match="loss_fn"):
        trainer(callbacks=[cb], max_epochs=1).fit(GNClassifier(), loader(x, y))
    assert not (tmp_path / "b.zarr").exists() and not (tmp_path / "c.zarr").exists()


def test_loggers_trainer_mirrors_the_store_into_lightnings_own_tensorboard_logger(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x, y = data()
    logger = TensorBoardLogger(tmp_path / "tb", name="lit", version=0)
    cb = DynamicsCallback(tmp_path / "lit.zarr", probe=(x[:8], y[:8]), schedule=every(2), layers=[],
                          evaluate=lambda m: accuracy(m, x, y), loggers="trainer")
    trainer(callbacks=[cb], max_epochs=1, logger=logger, log_every_n_steps=1).fit(Classifier(), loader(x, y))
    events = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0})
    events.Reload()
    tree = dynamics.open_run(tmp_path / "lit.zarr")
    metrics, checkpoints = tree["metrics"].to_dataset(), tree["checkpoints"].to_dataset()
    for tag, steps, values in (("metrics/loss", metrics["step"], metrics["loss"]),
                               ("metrics/loss_after", metrics["step"], metrics["loss_after"]),
                               ("checkpoints/test_acc", checkpoints["checkpoint_step"], checkpoints["test_acc"])):
        got = {e.step: e.value for e in events.Scalars(tag)}
        assert got == {int(s): np.float32(v) for s, v in zip(steps.values, values.values)}, tag
    assert "train_loss" in events.Tags()["scalars"]   # the module's own logging goes on beside it


@pytest.mark.slow
def test_two_process_ddp_on_cpu_rank0_writes_the_global_batch_losses(tmp_path):
    """Lightning's own DDP launcher, 2 CPU processes (gloo): rank 0 writes, rank 1 writes nothing; the
    stored losses are the means of the ranks' own-batch losses, each rank's measured independently."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here.parents[1]), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(here / "lightning_ddp.py"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and not ranks[0]["store_existed"]
    assert [r["recorder"] for r in ranks] == ["Recorder", "InactiveRecorder"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.zarr", "rank0.json", "rank1.json"]
    tree = dynamics.open_run(tmp_path / "ddp.zarr")
    assert tree.attrs["status"] == "complete"
    metrics = tree["metrics"].to_dataset()
    steps = [row["step"] for row in ranks[0]["rows"]]
    assert metrics["step"].values.tolist() == steps == list(range(1, 9))   # 64 samples / (2 ranks x 8) x 2 epochs
    for name in ("loss", "loss_after"):
        mean = [(a[name] + b[name]) / 2 for a, b in zip(ranks[0]["rows"], ranks[1]["rows"])]
        np.testing.assert_allclose(metrics[name].values, mean, rtol=1e-12, err_msg=name)
    assert ranks[0]["rows"][0]["loss"] != ranks[1]["rows"][0]["loss"]   # the ranks did see different batches
    assert tree["checkpoints"]["checkpoint_step"].values.tolist() == [0, 2, 4, 6, 8]
    params = tree["params"].to_dataset()
    for name, value in ranks[0]["params"].items():
        np.testing.assert_array_equal(value, ranks[1]["params"][name])
        np.testing.assert_array_equal(params[name.replace(".", "__")].values[-1], value)
