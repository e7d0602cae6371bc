"""DynamicsCallback with a real transformers.Trainer (CPU) on a tiny BERT classifier built from a config (no
download), token inputs: every recorded number against the whole batch's loss computed by the test from
parameter copies, the token-probe NTK against loops of plain autograd, training left untouched (dropout),
and resume from the Trainer's own checkpoint against an uninterrupted run."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import xarray as xr
from torch.func import functional_call
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

import dynamics
from dynamics.integrations.huggingface import DynamicsCallback
from dynamics.schedules import every

N, LENGTH, VOCAB, CLASSES = 48, 8, 40, 3
logging.getLogger("transformers").setLevel(logging.ERROR)


def tiny_bert(dropout: float = 0.0) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=LENGTH, num_labels=CLASSES,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return BertForSequenceClassification(config)


def tokens(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (N, LENGTH), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, 0] % CLASSES}


class Rows(torch.utils.data.Dataset):
    def __init__(self, data):
        self.data = data

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.data.items()}


def arguments(folder, **options) -> TrainingArguments:
    settings = dict(output_dir=str(folder), per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=10,
                    learning_rate=5e-3, save_strategy="steps", save_steps=4, logging_strategy="no", report_to="none",
                    use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0)
    settings.update(options)
    return TrainingArguments(**settings)


def probe(data):
    return ({"input_ids": data["input_ids"][:6], "attention_mask": data["attention_mask"][:6]}, data["labels"][:6])


def held(data):
    return {"input_ids": data["input_ids"][-8:], "attention_mask": data["attention_mask"][-8:],
            "labels": data["labels"][-8:]}


class Witness(TrainerCallback):
    """The test's own record: θ before every update and the samples of each step's batch."""

    def __init__(self):
        self.params, self.batches, self.hook = [], [], None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        def capture(module, args_, kwargs_):
            if module.training and torch.is_grad_enabled():
                self.batches[-1].append({k: kwargs_[k].clone() for k in ("input_ids", "attention_mask", "labels")})
        self.hook = model.register_forward_pre_hook(capture, with_kwargs=True)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.params.append({k: v.detach().clone() for k, v in model.named_parameters()})
        self.batches.append([])

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.params.append({k: v.detach().clone() for k, v in model.named_parameters()})
        self.hook.remove()


def whole_batch_loss(model, params, micro_batches) -> float:
    """Mean cross-entropy over every sample of the step's batch (all its micro-batches), at ``params``."""
    batch = {k: torch.cat([m[k] for m in micro_batches]) for k in micro_batches[0]}
    with torch.no_grad():
        logits = functional_call(model, params, (), {"input_ids": batch["input_ids"],
                                                      "attention_mask": batch["attention_mask"]}).logits
    return float(torch.nn.functional.cross_entropy(logits, batch["labels"]))


def test_every_number_matches_the_whole_batch_loss_and_the_token_ntk_matches_autograd(tmp_path):
    data = tokens()
    model = tiny_bert()
    callback = DynamicsCallback(tmp_path / "hf.zarr", probe=probe(data), held_out=held(data), next_batch=True,
                                schedule=every(5), layers=[])
    witness = Witness()
    with callback:
        Trainer(model, arguments(tmp_path / "out"), train_dataset=Rows(data), callbacks=[callback, witness]).train()
    tree = dynamics.open_run(tmp_path / "hf.zarr")
    assert tree.attrs["status"] == "complete"
    metrics = tree["metrics"].to_dataset()
    steps = 10
    assert metrics["step"].values.tolist() == list(range(1, steps + 1))
    reference = tiny_bert()
    theta, batches = witness.params, witness.batches
    assert len(theta) == steps + 1 and all(len(b) == 2 for b in batches)   # two micro-batches per update
    other = held(data)
    expected = {name: [] for name in ("loss", "loss_after", "other_loss", "other_loss_after", "next_loss",
                                      "next_loss_after", "lr")}
    for t in range(1, steps + 1):
        expected["loss"].append(whole_batch_loss(reference, theta[t - 1], batches[t - 1]))
        expected["loss_after"].append(whole_batch_loss(reference, theta[t], batches[t - 1]))
        expected["other_loss"].append(whole_batch_loss(reference, theta[t - 1], [other]))
        expected["other_loss_after"].append(whole_batch_loss(reference, theta[t], [other]))
        nxt = batches[t] if t < steps else None
        expected["next_loss"].append(whole_batch_loss(reference, theta[t - 1], nxt) if nxt else np.nan)
        expected["next_loss_after"].append(whole_batch_loss(reference, theta[t], nxt) if nxt else np.nan)
        expected["lr"].append(5e-3 * (1 - (t - 1) / steps))   # linear decay, no warm-up
    for name, values in expected.items():
        np.testing.assert_allclose(metrics[name].values, values, rtol=2e-5, atol=1e-7, err_msg=name)
    checkpoints = tree["checkpoints"].to_dataset()
    assert checkpoints["checkpoint_step"].values.tolist() == [0, 5, 10]
    # the traced NTK of the logits on the token probe at the last checkpoint, by loops of autograd
    x, _ = probe(data)
    reference.load_state_dict({**reference.state_dict(), **theta[-1]})
    reference.eval()
    rows = []
    for i in range(6):
        logits = reference(**{k: v[i:i + 1] for k, v in x.items()}).logits[0]
        for o in range(CLASSES):
            grads = torch.autograd.grad(logits[o], list(reference.parameters()), retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                   for g, p in zip(grads, reference.parameters())]).double())
    jac = torch.stack(rows).reshape(6, CLASSES, -1)
    ntk = torch.einsum("aop,bop->ab", jac, jac).numpy()
    np.testing.assert_allclose(checkpoints["ntk"].values[-1], ntk, rtol=1e-4, atol=1e-6 * np.abs(ntk).max())


def test_extra_forwards_leave_training_untouched_with_dropout(tmp_path):
    data = tokens(1)
    finals = []
    for with_callback in (False, True):
        model = tiny_bert(dropout=0.2)
        callbacks = [DynamicsCallback(tmp_path / "drop.zarr", probe=probe(data), held_out=held(data), next_batch=True,
                                      schedule=every(100), layers=[])] if with_callback else []
        Trainer(model, arguments(tmp_path / f"out{with_callback}", max_steps=6, save_strategy="no"),
                train_dataset=Rows(data), callbacks=callbacks).train()
        finals.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    for name in finals[0]:
        assert torch.equal(finals[0][name], finals[1][name]), name


class Crash(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 6:
            raise RuntimeError("simulated crash")


def test_resume_from_the_trainers_checkpoint_equals_an_uninterrupted_run(tmp_path):
    data = tokens(2)

    def run(name, callbacks, **options):
        return Trainer(tiny_bert(), arguments(tmp_path / name, **options), train_dataset=Rows(data),
                       callbacks=callbacks)

    def callback(path):
        return DynamicsCallback(path, probe=probe(data), held_out=held(data), next_batch=True, schedule=every(3),
                                layers=[])

    with callback(tmp_path / "whole.zarr") as whole:
        run("whole", [whole]).train()
    path = tmp_path / "resumed.zarr"
    first = callback(path)            # without the context manager: the store stays open after the crash
    crashed = run("crashed", [first, Crash()])
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.train()
    assert dynamics.open_run(path).attrs["status"] == "running"
    assert (tmp_path / "crashed" / "checkpoint-4" / "dynamics_callback.pt").is_file()
    with callback(path) as second:   # the same model, in the same process: the stale callback is retired
        Trainer(crashed.model, arguments(tmp_path / "crashed"), train_dataset=Rows(data), callbacks=[second]).train(
            resume_from_checkpoint=str(tmp_path / "crashed" / "checkpoint-4"))
    assert first.recorder.closed and not first._hooks
    resumed, reference = dynamics.open_run(path), dynamics.open_run(tmp_path / "whole.zarr")
    assert resumed.attrs["status"] == "complete"
    for group in ("metrics", "checkpoints", "params"):
        xr.testing.assert_allclose(resumed[group].to_dataset(), reference[group].to_dataset(), rtol=1e-6, atol=1e-8)
    assert resumed["metrics"]["step"].values.tolist() == list(range(1, 11))


def test_a_model_without_its_own_loss_is_refused_at_the_first_step(tmp_path):
    data = tokens(3)
    unlabelled = {k: v for k, v in data.items() if k != "labels"}
    callback = DynamicsCallback(tmp_path / "nolabels.zarr", probe=probe(data), layers=[], schedule=every(100))
    trainer = Trainer(tiny_bert(), arguments(tmp_path / "out", max_steps=2, save_strategy="no"),
                      train_dataset=Rows(data), callbacks=[callback],
                      compute_loss_func=lambda outputs, labels, num_items_in_batch=None:
                      torch.nn.functional.cross_entropy(outputs.logits, labels))
    del unlabelled
    with pytest.raises(ValueError, match="returned no loss"):
        with callback:
            trainer.train()
    assert dynamics.open_run(tmp_path / "nolabels.zarr").attrs["status"] == "failed"
    with pytest.raises(ValueError, match="labels"):
        DynamicsCallback(tmp_path / "x.zarr", probe=probe(data), held_out={"input_ids": data["input_ids"]})
    with pytest.raises(TypeError, match="unknown DynamicsCallback options"):
        DynamicsCallback(tmp_path / "x.zarr", probe=probe(data), resume=True)
