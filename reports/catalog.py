"""The report's figures in reading order: figure function, title, caption and PNG file name.

A caption is computed from the analysis Dataset by the figure's own module, from the same data the
figure draws (which panels, which groups of tensors, the model's dtype, the range of what is drawn),
so it cannot describe lines that are not there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import xarray as xr

from reports import figures
from reports.figures import kernels, lazy, representations, training, weights


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the report: ``draw(analysis) -> Figure``, its title and ``describe(analysis) -> caption``."""

    name: str
    draw: Callable
    title: str
    describe: Callable[[xr.Dataset], str]

    def caption(self, ds: xr.Dataset) -> str:
        """The caption for ``ds`` (the Dataset the figure was drawn from); "" when the figure's
        quantities are not in ``ds`` (then it is not drawn either)."""
        try:
            return self.describe(ds)
        except (ValueError, KeyError):
            return ""


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("loss_accuracy", figures.loss_accuracy, "Loss and accuracy", training.loss_accuracy_caption),
    FigureSpec("batch_loss_change", figures.batch_loss_change, "Per-mini-batch overfitting",
               training.batch_loss_change_caption),
    FigureSpec("ntk_dynamics", figures.ntk_dynamics, "Neural tangent kernel", kernels.ntk_dynamics_caption),
    FigureSpec("cka_to_init", figures.cka_to_init, "Representation change per layer",
               representations.cka_to_init_caption),
    FigureSpec("cka_between_optimizers", figures.cka_between_optimizers, "Representations across runs",
               representations.cka_between_optimizers_caption),
    FigureSpec("effective_rank", figures.effective_rank, "Effective rank", kernels.effective_rank_caption),
    FigureSpec("probe_accuracy", figures.probe_accuracy, "Linear probes", representations.probe_accuracy_caption),
    FigureSpec("gn_residual", figures.gn_residual, "Gauss–Newton residual", training.gn_residual_caption),
    FigureSpec("weight_change", figures.weight_change, "Weight change", weights.weight_change_caption),
    FigureSpec("linearized_twin", figures.linearized_twin, "Linearised twin", lazy.linearized_twin_caption),
    FigureSpec("ntk_spectrum", figures.ntk_spectrum, "NTK spectrum", lazy.ntk_spectrum_caption),
    FigureSpec("sharpness", figures.sharpness, "Sharpness", lazy.sharpness_caption),
)
