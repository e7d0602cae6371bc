"""A Gauss–Newton solver as the optimiser of a LightningModule (manual optimisation).

GN solvers (:class:`dynamics.gauss_newton.KernelGN`, :class:`~dynamics.gauss_newton.ReversibleGN`)
take the batch, ``step(x, y)``, not a gradient closure, so they run under Lightning's *manual*
optimisation. Lightning passes its closure to ``optimizer.step(closure=...)``; :class:`LightningGN`
accepts it (runs it, so Lightning's ``on_before_optimizer_step`` hooks fire), then makes the GN step.
Stepping through ``self.optimizers().step(...)`` lets Lightning count the update (``global_step``,
``ModelCheckpoint(every_n_train_steps=...)``, ``max_steps``) and checkpoint the optimiser's state::

    class GNClassifier(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False      # a GN step needs the batch, not a closure
            self.net = MLP(40, 64, 2, 10, seed=0)

        def forward(self, x):
            return self.net(x)

        def configure_optimizers(self):
            return LightningGN(KernelGN(self.net, lr=0.5, loss="ce"))

        def training_step(self, batch, batch_idx):
            x, y = batch
            report = self.optimizers().step(x=x, y=y)   # one GN update: a GNStepReport
            self.log("train_loss", report.loss)
            return torch.tensor(report.loss)           # the loss before the update

:class:`dynamics.integrations.lightning.DynamicsCallback` logs the report's ρ as ``gn_residual``.
One process only: a GN step solves on its own batch, and DDP has no gradient to average, so the
replicas would drift apart; LightningGN raises at the first step of a multi-process job.
LR schedules: change ``solver.param_groups[0]["lr"]`` in ``training_step`` (the solver's settings
live in its single parameter group).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from dynamics.gauss_newton.base import GaussNewtonOptimizer


class LightningGN:
    """Wrap a GN solver so that Lightning's ``LightningOptimizer.step(closure, x=..., y=...)`` can call it.

    ``param_groups``, ``defaults``, ``state``, ``state_dict`` and ``load_state_dict`` are the
    solver's. ``step(closure=None, *, x, y)`` runs ``closure`` (Lightning's, or none), then
    ``solver.step(x, y)``, and returns its :class:`~dynamics.gauss_newton.GNStepReport`, also kept as
    :attr:`last_report` with :attr:`steps` counting the updates made. TypeError for a solver that is
    not a GN optimiser; RuntimeError at the first step of a job with more than one process.
    """

    def __init__(self, solver: GaussNewtonOptimizer) -> None:
        if not isinstance(solver, GaussNewtonOptimizer):
            raise TypeError(f"LightningGN wraps a dynamics.gauss_newton solver (KernelGN, ReversibleGN), "
                            f"got {type(solver).__name__}")
        self.solver = solver
        self.last_report = None
        self.steps = 0

    @property
    def param_groups(self) -> list[dict]:
        return self.solver.param_groups

    @property
    def defaults(self) -> dict:
        return self.solver.defaults

    @property
    def state(self):
        return self.solver.state

    def state_dict(self) -> dict:
        return self.solver.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.solver.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """No-op: GN steps do not use ``.grad``."""

    def step(self, closure: Callable[[], Any] | None = None, *, x: Any = None, y: Any = None):
        if x is None or y is None:
            raise TypeError("LightningGN.step needs the batch: self.optimizers().step(x=x, y=y)")
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            raise RuntimeError(f"LightningGN runs in one process; this job has {torch.distributed.get_world_size()} "
                               f"(each replica would take a different GN step: there is no gradient for DDP to "
                               f"average)")
        if closure is not None:
            closure()
        report = self.solver.step(x, y)
        self.last_report = report
        self.steps += 1
        return report

    def __repr__(self) -> str:
        return f"LightningGN({type(self.solver).__name__}, lr={self.param_groups[0]['lr']})"
