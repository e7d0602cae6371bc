"""What one Gauss–Newton step did: the report returned by ``ReversibleGN.step`` and ``KernelGN.step``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GNStepReport:
    """Report of one Gauss–Newton step.

    Attributes:
        loss: batch loss before the update (see :mod:`dynamics.gauss_newton.targets` for conventions).
        residual: ρ = ‖J δθ + α ε‖ / ‖α ε‖ in output space (N × O), the relative error with which the
            linearised outputs move by the requested −α ε (0 for an exact GN step).
        update_norm: ‖δθ‖ over all trained parameters.
        full_rank: per block (ReversibleGN) whether both couplings' feature matrices had full row
            rank N, i.e. the block alone could realise any target; for KernelGN a 1-tuple: whether the
            batch NTK was (numerically) nonsingular.
        ranks: numerical ranks used by the solves (per coupling F, G of each block; or the NTK rank).
        time_s: wall-clock seconds of the step (validation to parameter update).
        lr: α used.
        target_norm: ‖α ε‖.
    """

    loss: float
    residual: float
    update_norm: float
    full_rank: tuple[bool, ...]
    ranks: tuple[int, ...]
    time_s: float
    lr: float
    target_norm: float
