"""Exact Gauss–Newton: output-space targets, the tractable reversible solver, the NTK twin, and ρ.

- :func:`output_targets` — ε = H⁺ g for "mse" and "ce" (identity or exact closed form).
- :class:`ReversibleGN` — exact, tractable GN step for :class:`~dynamics.models.RevMLP`: a right
  inverse realising J δθ = −α ε exactly (not the minimum-norm step).
- :class:`KernelGN` — the minimum-norm (Moore–Penrose) GN step −α (JᵀHJ)⁺ Jᵀ g for any nn.Module
  through the batch NTK (−α J⁺ ε for MSE and the identity CE target).
- :func:`gn_residual` — ρ = ‖J δθ − target‖ / ‖target‖ by one forward-mode JVP.
"""

from dynamics.gauss_newton.kernel import GNStepWarning, KernelGN
from dynamics.gauss_newton.report import GNStepReport
from dynamics.gauss_newton.residual import gn_residual, output_change
from dynamics.gauss_newton.reversible import ReversibleGN
from dynamics.gauss_newton.targets import batch_loss, output_targets

__all__ = ["ReversibleGN", "KernelGN", "GNStepReport", "GNStepWarning", "output_targets", "batch_loss", "gn_residual",
           "output_change"]
