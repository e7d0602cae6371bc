"""The report's figures in reading order: figure function, title, caption and PNG file name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from reports import figures


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the report: ``draw(analysis) -> Figure`` plus the text shown with it."""

    name: str
    draw: Callable
    title: str
    caption: str


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("loss_accuracy", figures.loss_accuracy, "Loss and accuracy",
               "Loss and accuracy on the training and test sets at every checkpoint. Each line is an optimiser "
               "(the same colour in every figure); with several seeds, their mean with a ± 1 sd band. A training accuracy that keeps "
               "rising while the test accuracy stalls is overfitting. Dashed vertical lines mark optimiser "
               "switches of phased runs."),
    FigureSpec("batch_loss_change", figures.batch_loss_change, "Per-mini-batch overfitting",
               "Left: relative change of the loss caused by each update, 100·(L_after − L_before)/L_before, "
               "on the mini-batch the update was computed from (solid), on the next training mini-batch "
               "(dashed, when recorded) and on a fixed held-out batch (dotted), as a moving average over "
               "steps. Right: the mean log-ratio 100·mean(log(L_after/L_before)) over all steps (the "
               "unbiased average of heavy-tailed per-step changes). Dashed vertical lines mark optimiser "
               "switches of phased runs. An "
               "optimiser that fits every mini-batch without learning what carries over shows a large "
               "own-batch drop next to a near-zero other-batch change (transfer near 0)."),
    FigureSpec("ntk_dynamics", figures.ntk_dynamics, "Neural tangent kernel",
               "Empirical NTK Θ of a fixed probe set, traced over outputs. Left: kernel alignment "
               "A(Θ_t, Θ_0) = ⟨Θ_t, Θ_0⟩_F / (‖Θ_t‖_F ‖Θ_0‖_F) to initialisation; close to 1 means the "
               "kernel barely moves (the lazy regime). Middle: velocity 1 − A between consecutive "
               "checkpoints. Right (when recorded): alignment with the target kernel YYᵀ (Y the one-hot labels "
               "of a classification run, the targets of a regression run). A dotted vertical line marks the "
               "first step whose inputs were non-finite (a diverged run)."),
    FigureSpec("cka_to_init", figures.cka_to_init, "Representation change per layer",
               "Linear CKA (Kornblith et al. 2019) between each layer's representation of the probe set and "
               "the same layer at initialisation; 1 means unchanged up to rotation and isotropic scaling."),
    FigureSpec("cka_between_optimizers", figures.cka_between_optimizers, "Representations across runs",
               "Linear CKA between the representations that different runs learned, per layer, at the last "
               "checkpoint they share. Runs start from the same initialisation when they share a seed; a low "
               "value means the optimisers built different features."),
    FigureSpec("effective_rank", figures.effective_rank, "Effective rank",
               "Entropy effective rank exp(−Σ pᵢ log pᵢ), pᵢ = σᵢ / Σσ (Roy & Vetterli 2007). Left: of the "
               "probe-set NTK over training. Right: of each layer's centred representation at "
               "initialisation (dotted) and at the end (solid); lower means fewer directions in use."),
    FigureSpec("probe_accuracy", figures.probe_accuracy, "Linear probes",
               "Cross-validated accuracy of a logistic-regression probe trained on each layer's "
               "representation of the probe set, at initialisation (dotted) and at the end (solid): how "
               "much linearly usable class information each layer has built. Regression runs: the "
               "cross-validated R² of a ridge-regression probe instead."),
    FigureSpec("gn_residual", figures.gn_residual, "Gauss–Newton residual",
               "Relative residual ρ = ‖J δθ + α ε‖ / ‖α ε‖ of every Gauss–Newton step: how far the "
               "linearised output change misses its output-space target ε. Values at round-off (about "
               "1e-12) mean the step is exact. First-order runs have no residual and are not drawn."),
    FigureSpec("weight_change", figures.weight_change, "Weight change",
               "Relative distance of the trained parameters from initialisation, ‖θ_t − θ_0‖ / ‖θ_0‖, in %. "
               "Left: over training, for all weight matrices (solid) and all bias vectors (dashed), each "
               "group norm-weighted as one vector, sqrt(Σ‖Δθ_i‖²)/sqrt(Σ‖θ_i,0‖²), so small biases do not "
               "dominate. Right: each tensor at the last checkpoint (circles: weights, squares: biases). "
               "With several seeds: mean ± standard deviation."),
    FigureSpec("linearized_twin", figures.linearized_twin, "Linearised twin",
               "The network against its first-order Taylor model at initialisation, f_lin(x; θ) = f(x; θ_0) + "
               "J(x; θ_0)(θ − θ_0), trained beside it on the same mini-batches by the same optimiser (Lee et al. "
               "2019; Chizat et al. 2019). Left: the relative distance ‖f_t − f_lin,t‖ / ‖f_t − f_0‖ of their outputs "
               "on the test set (solid) and the probe set (dotted); near 0 the network trains in the lazy (kernel) "
               "regime, near 1 its features moved. Right: test accuracy of the network (solid) and of its twin "
               "(dashed). Seeds: mean ± 1 sd."),
    FigureSpec("ntk_spectrum", figures.ntk_spectrum, "NTK spectrum",
               "Eigen-decomposition Θ = Σ λ_i u_i u_iᵀ of the probe-set NTK at every checkpoint (Kopitkov & Indelman "
               "2020; Baratin et al. 2021). Top left: the largest eigenvalue λ₁. Top right: the condition number "
               "λ₁/λ_N, which bounds the conditioning of the Gauss–Newton solve (numerically singular kernels are not "
               "drawn). Bottom left: the share Σ_(i≤k) Σ_c (u_iᵀy_c)² / ‖Y‖² of the one-hot labels' energy in the "
               "top-k eigen-directions — how much of the target the kernel's fastest directions carry. Bottom right: "
               "the spectrum λ_i/λ₁ at the first (dotted) and last (solid) checkpoint. Seeds: mean ± 1 sd."),
    FigureSpec("sharpness", figures.sharpness, "Sharpness",
               "Largest eigenvalue of the loss Hessian (solid) and of the generalised Gauss–Newton matrix (dashed) "
               "on the probe set, by Lanczos (Cohen et al. 2021). Right: sharpness over the optimiser's stability "
               "threshold — λ_max(H) / (2/η) for SGD (2(1 + μ)/η with momentum μ) and Adam's preconditioned "
               "sharpness over 38/η (Cohen et al. 2022) — where 1 is the edge of stability; Gauss–Newton has no such "
               "threshold and is drawn on the left only. Seeds: mean ± 1 sd."),
)
