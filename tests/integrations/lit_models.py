"""LightningModules and data shared by the Lightning tests and the DDP script (tiny, float64, CPU)."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dynamics.gauss_newton import KernelGN
from dynamics.integrations.lightning import LightningGN
from dynamics.models import MLP

N, FEATURES, CLASSES, BATCH = 64, 6, 3, 16


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(N, FEATURES, generator=gen, dtype=torch.float64), torch.randint(0, CLASSES, (N,), generator=gen)


def loader(x: torch.Tensor, y: torch.Tensor, batch: int = BATCH) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


def trainer(callbacks=(), **options) -> L.Trainer:
    settings = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, deterministic=True)
    settings.update(options)
    return L.Trainer(callbacks=list(callbacks), **settings)


class Classifier(L.LightningModule):
    """An MLP (optionally with dropout and batch normalisation) trained with SGD or Adam on cross-entropy."""

    def __init__(self, optimizer: str = "adam", lr: float = 0.05, noisy: bool = False) -> None:
        super().__init__()
        self.optimizer_name, self.lr = optimizer, lr
        if noisy:
            self.net = nn.Sequential(nn.Linear(FEATURES, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Dropout(0.3),
                                     nn.Linear(16, CLASSES)).double()
        else:
            self.net = MLP(FEATURES, 16, 2, CLASSES, seed=0, dtype=torch.float64)
        self.logged_losses: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(self.parameters(), lr=self.lr)
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class GNClassifier(L.LightningModule):
    """KernelGN as the optimiser of a LightningModule: the documented manual-optimisation recipe."""

    def __init__(self, lr: float = 0.5) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.lr = lr
        self.net = MLP(FEATURES, 16, 2, CLASSES, seed=0, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self):
        return LightningGN(KernelGN(self.net, lr=self.lr, loss="ce"))

    def training_step(self, batch, batch_idx):
        x, y = batch
        report = self.optimizers().step(x=x, y=y)
        self.log("train_loss", report.loss)
        return torch.tensor(report.loss)


def cross_entropy(module, batch) -> torch.Tensor:
    """loss_fn for the extra forwards of a manually optimised module."""
    x, y = batch
    return nn.functional.cross_entropy(module(x), y)
