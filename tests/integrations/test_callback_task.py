"""The task (classification/regression) of runs recorded through the Lightning and Hugging Face callbacks,
where the probe targets alone are ambiguous (:mod:`dynamics.task`): 0/1 targets of a one-output model.
Lightning does not say what ``training_step`` optimises, so the callback takes ``task=`` and refuses to
guess; transformers fixes the loss of a ``...ForSequenceClassification`` model (its ``problem_type``,
MSE for one label), which the callback states. The references are transformers' own choice of loss
(``problem_type`` after a forward with labels) and the textbook alignment ⟨K, yyᵀ⟩_F/(‖K‖_F‖yyᵀ‖_F)
of the stored NTK with the targets as numbers."""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from transformers import (BertConfig, BertForSequenceClassification, BertForTokenClassification, Trainer,
                          TrainingArguments)

import dynamics
from dynamics import Recorder
from dynamics.integrations.huggingface import DynamicsCallback as HFCallback
from dynamics.integrations.huggingface import known_task
from dynamics.integrations.lightning import DynamicsCallback
from dynamics.schedules import every
from lit_models import FEATURES, data, loader, trainer

logging.getLogger("transformers").setLevel(logging.ERROR)


class OneLogit(L.LightningModule):
    """Binary classification with one logit and binary cross-entropy: float 0/1 targets."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(FEATURES, 8), nn.Tanh(), nn.Linear(8, 1)).double()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(self(x)[:, 0], y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_refuses_ambiguous_targets_at_the_start_of_fit_and_records_a_stated_task(tmp_path):
    x, labels = data()
    y = (labels > 0).double()                               # 0/1 floats: BCE targets, or regression targets?
    cb = DynamicsCallback(tmp_path / "guess.zarr", probe=(x[:8], y[:8]), schedule=every(100), layers=[])
    with pytest.raises(ValueError, match="0 and 1 and the model has one output.*State task"):
        trainer(callbacks=[cb], max_epochs=1).fit(OneLogit(), loader(x, y))
    assert not (tmp_path / "guess.zarr").exists()
    cb = DynamicsCallback(tmp_path / "bce.zarr", probe=(x[:8], y[:8]), schedule=every(100), layers=[],
                          task="classification")
    trainer(callbacks=[cb], max_epochs=1).fit(OneLogit(), loader(x, y))
    attrs = dynamics.open_run(tmp_path / "bce.zarr").attrs
    assert (attrs["status"], attrs["task"], attrs["task_source"]) == ("complete", "classification", "stated")


def _bert(cls=BertForSequenceClassification, **config):
    torch.manual_seed(0)
    return cls(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=8, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0, **config))


def test_known_task_is_the_loss_transformers_computes():
    """The reference: the ``problem_type`` transformers' own forward sets from the labels it is given."""
    ids = torch.randint(1, 30, (4, 8), generator=torch.Generator().manual_seed(0))
    for num_labels, labels in ((1, torch.tensor([0.0, 1.0, 1.0, 0.0])), (1, torch.tensor([0, 1, 1, 0])),
                               (3, torch.tensor([0, 2, 1, 0]))):
        model = _bert(num_labels=num_labels)
        before = known_task(model)
        model(input_ids=ids, labels=labels)
        expected = {"regression": "regression", "single_label_classification": "classification"}[model.config.problem_type]
        assert known_task(model) == expected
        assert before == (expected if num_labels == 1 else None)   # unset: only one label fixes the loss
    assert known_task(_bert(num_labels=3, problem_type="multi_label_classification")) is None
    assert known_task(_bert(BertForTokenClassification, num_labels=1)) is None


class _Rows(torch.utils.data.Dataset):
    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data["labels"])

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.data.items()}


def test_hugging_face_states_the_task_of_a_one_label_model(tmp_path):
    """A one-label BERT on 0/1 labels: transformers fits them by MSE, so the run is "regression" (stated by
    the callback) where a plain Recorder refuses to guess; its NTK–target alignment is the textbook one."""
    ids = torch.randint(1, 30, (16, 8), generator=torch.Generator().manual_seed(1))
    rows = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": (ids[:, 0] % 2).float()}
    probe = ({"input_ids": ids[:6], "attention_mask": rows["attention_mask"][:6]}, rows["labels"][:6])
    with pytest.raises(ValueError, match="0 and 1 and the model has one output"):
        Recorder(tmp_path / "plain.zarr", _bert(num_labels=1), probe, layers=[])
    args = TrainingArguments(str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, save_strategy="no",
                             logging_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
    with HFCallback(tmp_path / "hf.zarr", probe=probe, layers=[], schedule=every(1), loss_after=False) as callback:
        Trainer(_bert(num_labels=1), args, train_dataset=_Rows(rows), callbacks=[callback]).train()
    tree = dynamics.open_run(tmp_path / "hf.zarr")
    assert (tree.attrs["task"], tree.attrs["task_source"]) == ("regression", "stated")
    from analysis import analyze
    ds = analyze(tmp_path / "hf.zarr", write=False, probe_checkpoints="none")
    y = probe[1].numpy().astype(np.float64)
    for c, k in enumerate(tree["checkpoints"]["ntk"].values.astype(np.float64)):
        t = np.outer(y, y)
        expected = float(np.sum(k * t) / (np.linalg.norm(k) * np.linalg.norm(t)))
        assert ds["ntk_target_alignment"].values[c] == pytest.approx(expected, rel=1e-9)
