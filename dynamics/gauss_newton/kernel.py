"""Moore–Penrose Gauss–Newton for any nn.Module through its batch NTK (DESIGN.md §3, "kernel" form).

δθ = −α Jᵀ (J Jᵀ + λ I)⁻¹ ε, where J Jᵀ (N·O × N·O) is the empirical NTK of the batch
(:func:`dynamics.ntk.empirical_ntk`, trace=False, chunked over samples) and Jᵀ c is one
torch.func.vjp — J is never formed. With damping λ = 0 and full row rank J this is −α J⁺ ε, the
minimum-norm update with J δθ = −α ε. λ = 0 and a singular NTK: eigh with truncation
(λ_i ≤ max(atol, rtol · λ_max) dropped), i.e. the pseudo-inverse. λ > 0: Levenberg–Marquardt.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from dynamics.gauss_newton.base import GaussNewtonOptimizer
from dynamics.gauss_newton.report import GNStepReport
from dynamics.gauss_newton.residual import trained_parameters
from dynamics.gauss_newton.solve import accepted_cholesky, default_rtol, keep_mask
from dynamics.gauss_newton.targets import CE_TARGETS, LOSSES, batch_loss, check_targets, output_targets
from dynamics.models.layers import eval_mode
from dynamics.ntk import METHODS, empirical_ntk


def solve_kernel(kernel: torch.Tensor, rhs: torch.Tensor, damping: float, rtol: float | None,
                 atol: float) -> tuple[torch.Tensor, int]:
    """c = (K + λI)⁻¹ rhs (Cholesky), or the truncated pseudo-inverse K⁺ rhs when λ = 0 and K is singular."""
    n = kernel.shape[0]
    rtol = default_rtol(n, kernel.dtype) if rtol is None else rtol
    damped = kernel + damping * torch.eye(n, dtype=kernel.dtype, device=kernel.device)
    chol = accepted_cholesky(damped, rtol, atol)
    if chol is not None:
        return torch.cholesky_solve(rhs, chol), n
    eigenvalues, vectors = torch.linalg.eigh(damped)
    keep = keep_mask(eigenvalues, rtol, atol)
    vectors = vectors[:, keep]
    return vectors @ ((vectors.T @ rhs) / eigenvalues[keep, None]), int(keep.sum())


class KernelGN(GaussNewtonOptimizer):
    """Gauss–Newton via the batch NTK for any model mapping (N, ...) inputs to (N, O) outputs.

    Args:
        model: any nn.Module (trained parameters: those with requires_grad).
        lr: α > 0. loss, ce_target: as in :func:`output_targets`.
        damping: λ ≥ 0 (0 = exact Moore–Penrose GN). rtol, atol: truncation when λ = 0 and singular.
        chunk_size: samples per chunk of the NTK computation (None: the NTK's default).
        method: NTK method ("auto", "structured", "jacobian").

    Everything is evaluated in eval mode (the model's flags are restored). ``step(x, y)`` returns a
    :class:`GNStepReport` whose ρ = ‖K c − (−α ε)‖ / ‖α ε‖ (K c = J δθ exactly), full_rank = (NTK
    full rank,), ranks = (rank used,).
    """

    choices = {"loss": LOSSES, "ce_target": CE_TARGETS, "method": METHODS}
    reals = {"lr": (True, False), "damping": (False, False), "rtol": (False, True), "atol": (False, False)}

    def __init__(self, model: nn.Module, *, lr: float, loss: str = "ce", damping: float = 0.0,
                 chunk_size: int | None = None, ce_target: str = "identity", rtol: float | None = None,
                 atol: float = 0.0, method: str = "auto") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"KernelGN needs an nn.Module, got {type(model).__name__}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be None or a positive int, got {chunk_size!r}")
        self.chunk_size = chunk_size
        super().__init__(model, dict(lr=lr, loss=loss, damping=damping, ce_target=ce_target,
                                     rtol=rtol, atol=atol, method=method))

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        """model(x) as (N, O), with bad inputs reported as ValueError/TypeError naming them."""
        like = next(iter(trained_parameters(self.model).values()))
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype != like.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the model has dtype {like.dtype}; convert one of them")
        if x.dim() < 1 or x.shape[0] == 0:
            raise ValueError(f"x needs a leading sample dimension with N >= 1, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"x contains {int((~torch.isfinite(x)).sum())} non-finite (NaN/Inf) values")
        try:
            out = self.model(x)
        except (RuntimeError, ValueError, TypeError) as error:
            raise ValueError(f"the model cannot take x of shape {tuple(x.shape)}: {error}") from error
        return out.reshape(x.shape[0], -1)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> GNStepReport:  # type: ignore[override]
        start = time.perf_counter()
        settings, model = self.settings, self.model
        params = trained_parameters(model)
        with eval_mode(model):
            with torch.no_grad():
                logits = self._outputs(x)
            n, n_outputs = logits.shape
            y = check_targets(y, n, n_outputs, settings["loss"], logits.dtype)
            loss = float(batch_loss(logits, y, settings["loss"]))
            desired = -settings["lr"] * output_targets(logits, y, settings["loss"], ce_target=settings["ce_target"])
            ntk = empirical_ntk(model, x, trace=False, method=settings["method"], chunk_size=self.chunk_size)
            kernel = ntk.permute(0, 2, 1, 3).reshape(n * n_outputs, n * n_outputs)
            coef, rank = solve_kernel(kernel, desired.reshape(-1, 1), settings["damping"],
                                      settings["rtol"], settings["atol"])
            names = list(params)

            def outputs(*values: torch.Tensor) -> torch.Tensor:
                return torch.func.functional_call(model, dict(zip(names, values)), (x,), strict=False).reshape(n, -1)

            _, pullback = torch.func.vjp(outputs, *(p.detach() for p in params.values()))
            update = pullback(coef.reshape(n, n_outputs))
        target_norm = float(torch.linalg.vector_norm(desired))
        error = float(torch.linalg.vector_norm(kernel @ coef - desired.reshape(-1, 1)))
        update_norm = self.apply_update(list(zip(params.values(), update)))
        return GNStepReport(
            loss=loss, residual=error / target_norm if target_norm > 0 else 0.0, update_norm=update_norm,
            full_rank=(rank == n * n_outputs,), ranks=(rank,), time_s=time.perf_counter() - start,
            lr=settings["lr"], target_norm=target_norm)
