"""Minimum-norm (Moore–Penrose) Gauss–Newton for any nn.Module through its batch NTK (DESIGN.md §3).

The step is δθ = −α (JᵀHJ + λ·)⁺ Jᵀ g in kernel form, J never formed:

- MSE and the identity CE target (H ∝ I): δθ = −α Jᵀ (K + λI)⁺ ε = −α J⁺ ε for λ = 0, K = J Jᵀ the
  (N·O × N·O) empirical NTK of the batch (:func:`dynamics.ntk.empirical_ntk`, trace=False).
- CE with the true softmax Hessian (``ce_target="exact"``): H is singular along each sample's
  all-ones logit direction, so the minimum-norm step is not −α J⁺ε. With H = S Sᵀ
  (:mod:`dynamics.gauss_newton.metric`, S of shape N·O × N·(O−1)):
  δθ = −α Jᵀ S (Sᵀ K S + λI)⁺ Sᵀ ε = −α (JᵀHJ)⁺ Jᵀ g for λ = 0. When J has full row rank this equals
  −α (P J)⁺ ε, P removing each sample's mean over classes: the logits move by −α ε up to a
  per-sample constant, which leaves the loss unchanged.

λ = 0 and a singular kernel: the truncated pseudo-inverse by the one truncation rule of
:mod:`dynamics.gauss_newton.solve`; λ > 0: Levenberg–Marquardt. Jᵀ c is one torch.func.vjp, or, for a
model torch.func cannot transform (activation checkpointing, nn.GRU), the contraction of c with the
Jacobian rows that plain autograd gives (:mod:`dynamics.ntk.products`).
Precision: the NTK, the solve and Jᵀ c are computed in float64 (on a float64 copy of a lower-precision
model); only δθ is rounded to the model's dtype.
"""

from __future__ import annotations

import copy
import math
import time
import warnings

import torch
from torch import nn

from dynamics import functional, inputs
from dynamics.gauss_newton.base import GaussNewtonOptimizer
from dynamics.gauss_newton.metric import ce_hessian_factor, centre_per_sample
from dynamics.gauss_newton.report import GNStepReport
from dynamics.gauss_newton.residual import output_change, trained_parameters
from dynamics.gauss_newton.solve import SOLVE_DTYPE, TRUNCATIONS, EighPinv, Truncation, accepted_cholesky
from dynamics.gauss_newton.targets import CE_TARGETS, LOSSES, batch_loss, check_targets, output_targets
from dynamics.inputs import Inputs, OutputSelector
from dynamics.models.layers import eval_mode
from dynamics.ntk import METHODS, empirical_ntk
from dynamics.ntk.products import jacobian_transpose_times
from dynamics.ntk.rows import FUNC_LIMITS
from dynamics.wrappers import unwrap_model

BATCHNORM = ("update", "freeze")


class GNStepWarning(UserWarning):
    """A Gauss–Newton step was truncated or missed its target by more than the documented tolerance."""


def residual_tolerance(dtype: torch.dtype) -> float:
    """ρ above which :class:`KernelGN` warns: √eps(dtype) (float32 3.5e-4, float64 1.5e-8)."""
    return math.sqrt(torch.finfo(dtype).eps)


def solve_kernel(kernel: torch.Tensor, rhs: torch.Tensor, damping: float, rule: Truncation) -> tuple[torch.Tensor, int]:
    """c = (K + λI)⁻¹ rhs in float64: Cholesky when the truncation rule keeps every direction, else
    the rule's truncated pseudo-inverse (K + λI)⁺ rhs (eigh). Returns (c, rank kept)."""
    n = kernel.shape[0]
    if n == 0:
        return rhs.to(SOLVE_DTYPE), 0
    kernel, rhs = kernel.to(SOLVE_DTYPE), rhs.to(SOLVE_DTYPE)
    damped = kernel + damping * torch.eye(n, dtype=kernel.dtype, device=kernel.device)
    chol = accepted_cholesky(damped, rule)
    if chol is not None:
        return torch.cholesky_solve(rhs, chol), n
    pinv = EighPinv(damped, rule)
    return pinv.solve(rhs)[0], pinv.rank


def has_running_stats(model: nn.Module) -> list[nn.Module]:
    """Normalisation layers of ``model`` that are in training mode and track running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
            and m.track_running_stats and m.training]


class KernelGN(GaussNewtonOptimizer):
    """Minimum-norm Gauss–Newton via the batch NTK for any model mapping N input samples to (N, O) outputs.

    Args:
        model: any nn.Module (trained parameters: those with requires_grad). ``step(x, y)`` takes the
            batch as the model's forward does (:mod:`dynamics.inputs`: a tensor, a tuple of tensors
            or a dict of them; floating leaves in the model's dtype, integer token ids as they are).
        lr: α > 0. loss, ce_target: as in :func:`output_targets` ("exact" uses the softmax Hessian
            metric, see the module docstring).
        damping: λ ≥ 0 (0 = exact Moore–Penrose GN).
        truncation: "exact" (default) or "paper", the one rule of :mod:`dynamics.gauss_newton.solve`
            applied to the eigenvalues of the (Sᵀ K S or K) kernel; rtol, atol override it.
        chunk_size: samples per chunk of the NTK computation (None: the NTK's default).
        method: NTK method ("auto", "structured", "jacobian").
        batchnorm: "update" (default): when the model is in training mode, each step first runs one
            no-grad forward with its normalisation layers in training mode (everything else in eval
            mode), so running statistics update once per step, as with a torch.optim loop; "freeze":
            never touch them. The GN step itself always linearises the eval-mode model (per-sample
            outputs, running statistics), and the model's train/eval flags are restored.
        output: which output of the forward is f when it returns more than a tensor
            (:func:`dynamics.inputs.select_output`; None → a mapping's ``"logits"``, a tuple's first).

    ``step(x, y)`` returns a :class:`GNStepReport` whose ρ is measured in float64 from the update
    actually applied (rounded to the model's dtype): ρ = ‖J δθ + α ε‖ / ‖α ε‖, and for
    ``ce_target="exact"`` ‖P(J δθ + α ε)‖ / ‖α ε‖ (per-sample shifts do not change the loss).
    full_rank = (kernel nonsingular,), ranks = (rank kept,) of N·O (N·(O−1) for "exact" CE).
    When λ = 0, a :class:`GNStepWarning` is issued when the rule truncated directions or when ρ
    exceeds :func:`residual_tolerance` of the model's dtype (√eps: 3.5e-4 float32, 1.5e-8 float64).
    Raises ValueError/TypeError on bad settings or inputs before any parameter changes.
    """

    choices = {"loss": LOSSES, "ce_target": CE_TARGETS, "method": METHODS, "truncation": TRUNCATIONS,
               "batchnorm": BATCHNORM}
    reals = {"lr": (True, False), "damping": (False, False), "rtol": (False, True), "atol": (False, True)}

    def __init__(self, model: nn.Module, *, lr: float, loss: str = "ce", damping: float = 0.0,
                 chunk_size: int | None = None, ce_target: str = "identity", rtol: float | None = None,
                 atol: float | None = None, method: str = "auto", truncation: str = "exact",
                 batchnorm: str = "update", output: OutputSelector = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"KernelGN needs an nn.Module, got {type(model).__name__}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be None or a positive int, got {chunk_size!r}")
        self.chunk_size = chunk_size
        self.output = inputs.check_selector(output)
        super().__init__(model, dict(lr=lr, loss=loss, damping=damping, ce_target=ce_target, rtol=rtol,
                                     atol=atol, method=method, truncation=truncation, batchnorm=batchnorm))

    def _outputs(self, model: nn.Module, x: Inputs) -> torch.Tensor:
        """f(x) as (N, O), with bad inputs reported as ValueError/TypeError naming them."""
        like = next(iter(trained_parameters(self.model).values()))
        x = inputs.check_inputs(x, "x")
        for key, leaf in inputs.floating_leaves(x):
            if leaf.dtype != like.dtype:
                where = "x" if key is None else f"x[{key!r}]"
                raise TypeError(f"{where} has dtype {leaf.dtype} but the model has dtype {like.dtype}; convert one of them")
        inputs.check_finite(x, "x")
        with eval_mode(model), torch.no_grad():
            return inputs.first_outputs(model, x, self.output, "x")

    def _update_statistics(self, x: Inputs) -> None:
        """One no-grad forward with only the normalisation layers in training mode."""
        model = unwrap_model(self.model)
        norms = has_running_stats(model)
        if not norms:
            return
        with eval_mode(model), torch.no_grad():
            for module in norms:
                module.train()
            inputs.call(model, x)

    def step(self, x: Inputs, y: torch.Tensor) -> GNStepReport:  # type: ignore[override]
        start = time.perf_counter()
        settings, model = self.settings, unwrap_model(self.model)   # the network inside torch.compile, DDP, ...
        params = trained_parameters(model)
        dtype = next(iter(params.values())).dtype
        logits = self._outputs(model, x)
        x = inputs.check_inputs(x, "x")
        n, n_outputs = logits.shape
        y = check_targets(y, n, n_outputs, settings["loss"], logits.dtype)
        if settings["batchnorm"] == "update":
            self._update_statistics(x)
        # float64 twin: NTK, solve and Jᵀc in float64; the model itself is only updated at the end
        twin = model if dtype == SOLVE_DTYPE else copy.deepcopy(model).to(SOLVE_DTYPE)
        x64 = inputs.prepare(x, dtype=SOLVE_DTYPE)
        twin_params = trained_parameters(twin)
        names = list(twin_params)
        exact_ce = settings["loss"] == "ce" and settings["ce_target"] == "exact"
        with eval_mode(twin):
            with torch.no_grad():
                logits64 = inputs.outputs(twin, x64, self.output)
            loss = float(batch_loss(logits64, y, settings["loss"]))
            desired = -settings["lr"] * output_targets(logits64, y, settings["loss"], ce_target=settings["ce_target"])
            ntk = empirical_ntk(twin, x64, trace=False, method=settings["method"], chunk_size=self.chunk_size,
                                output=self.output)
            kernel = ntk.permute(0, 2, 1, 3).reshape(n, n_outputs, n, n_outputs)
            if exact_ce:  # Sᵀ K S and Sᵀ ε, S block-diagonal (N, O, O−1)
                factor = ce_hessian_factor(logits64)
                kernel = torch.einsum("nao,namc,mcp->nomp", factor, kernel, factor)
                rhs = torch.einsum("nao,na->no", factor, desired)
            else:
                rhs = desired
            size = rhs.numel()
            rule = Truncation.named(settings["truncation"], size, settings["rtol"], settings["atol"])
            coef, rank = solve_kernel(kernel.reshape(size, size), rhs.reshape(-1, 1), settings["damping"], rule)
            coef = coef.reshape(rhs.shape)
            if exact_ce:
                coef = torch.einsum("nao,no->na", factor, coef)

            slots = functional.parameter_slots(twin)

            def outputs(*values: torch.Tensor) -> torch.Tensor:
                return functional.call(twin, dict(zip(names, values)), x64, self.output, slots).reshape(n, -1)

            try:
                with torch.no_grad():
                    _, pullback = torch.func.vjp(outputs, *(p.detach() for p in twin_params.values()))
                    pulled = pullback(coef)
            except FUNC_LIMITS:   # torch.func cannot transform the model (activation checkpointing, a GRU)
                by_rows = jacobian_transpose_times(twin, x64, coef, self.output)
                pulled = [by_rows[name] for name in names]
            update = [u.to(dtype) for u in pulled]
        miss = output_change(twin, x64, [u.to(SOLVE_DTYPE) for u in update], output=self.output) - desired
        if exact_ce:
            miss = centre_per_sample(miss)
        target_norm = float(torch.linalg.vector_norm(desired))
        error = float(torch.linalg.vector_norm(miss))
        residual = error / target_norm if target_norm > 0 else 0.0
        update_norm = self.apply_update(list(zip(params.values(), update)))
        if settings["damping"] == 0 and rank < size:
            warnings.warn(f"KernelGN step truncated: kept rank {rank} of {size} (truncation="
                          f"{settings['truncation']!r}); rho = {residual:.2e}", GNStepWarning, stacklevel=3)
        elif settings["damping"] == 0 and residual > residual_tolerance(dtype):
            warnings.warn(f"KernelGN step missed its target: rho = {residual:.2e} > tolerance "
                          f"{residual_tolerance(dtype):.1e} for {dtype}", GNStepWarning, stacklevel=3)
        return GNStepReport(
            loss=loss, residual=residual, update_norm=update_norm, full_rank=(rank == size,), ranks=(rank,),
            time_s=time.perf_counter() - start, lr=settings["lr"], target_norm=target_norm)
