"""Forward pass of a RevMLP that keeps what the exact GN step needs, and tangent passes through it.

For a coupling F(u) = W σ(u Cᵀ) + b the forward pass stores its input u (N, half), its features
a = σ(u Cᵀ) (N, H) and the slopes σ'(u Cᵀ) (N, H). With those, the directional derivative is
F'(u) du = ((du Cᵀ) ⊙ σ'(u Cᵀ)) Wᵀ — no recomputation of the primal network. For a linear coupling
(σ = identity) with half ≤ H the state keeps the product M = W C (half × half) instead:
F(u) = u Mᵀ + b and F'(u) du = du Mᵀ cost N·half² instead of 2·N·half·H, and the features u Cᵀ are
formed only if a solver asks for them (the linear solver works from u alone).

Block y1 = x1 + F(x2), y2 = x2 + G(y1):
- forward tangent (push-forward):  dy1 = dx1 + F'(x2) dx2,   dy2 = dx2 + G'(y1) dy1;
- inverse tangent (pull-back):     dx2 = dy2 − G'(y1) dy1,   dx1 = dy1 − F'(x2) dx2,
  the derivative of the exact inverse x2 = y2 − G(y1), x1 = y1 − F(x2) at the stored states, so a
  desired change of the last block's output is pulled back to every block's output in one pass.
Tangents are (N, dim) tensors laid out like the block outputs, [d·1 | d·2].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dynamics.models.revmlp import Coupling, RevMLP


def activation_slope(activation: nn.Module, pre: torch.Tensor, features: torch.Tensor) -> torch.Tensor | None:
    """σ'(pre) elementwise, (N, H); None for the identity (slope 1 everywhere)."""
    if isinstance(activation, nn.Identity):
        return None
    if isinstance(activation, nn.ReLU):
        return (pre > 0).to(pre.dtype)
    if isinstance(activation, nn.Tanh):
        return 1 - features.square()
    _, slope = torch.func.jvp(activation, (pre,), (torch.ones_like(pre),))
    return slope


@dataclass
class CouplingState:
    """One coupling at the stored forward state: input u (N, half), features a (N, H), slopes σ'.

    ``product`` is M = W C (half × half) for a linear coupling with half ≤ H, else None; the
    features of such a coupling are formed on first access of :attr:`features`.
    """

    coupling: Coupling
    inputs: torch.Tensor
    stored_features: torch.Tensor | None
    slope: torch.Tensor | None
    product: torch.Tensor | None = None

    @property
    def is_linear(self) -> bool:
        return self.slope is None

    @property
    def features(self) -> torch.Tensor:
        """a = σ(u Cᵀ) (N, H)."""
        if self.stored_features is None:
            self.stored_features = self.coupling.activation(self.inputs @ self.coupling.proj.T)
        return self.stored_features

    def output(self) -> torch.Tensor:
        """F(u) = W a + b (N, half), through M = W C for a linear coupling that keeps it."""
        if self.product is not None:
            return torch.addmm(self.coupling.linear.bias, self.inputs, self.product.T)
        return self.coupling.linear(self.features)

    def jvp(self, du: torch.Tensor) -> torch.Tensor:
        """F'(u) du = ((du Cᵀ) ⊙ σ'(u Cᵀ)) Wᵀ (= du Mᵀ when linear), (N, half) → (N, half)."""
        if self.product is not None:
            return du @ self.product.T
        hidden = du @ self.coupling.proj.T
        if self.slope is not None:
            hidden = hidden * self.slope
        return hidden @ self.coupling.linear.weight.T


@dataclass
class BlockState:
    """States of one coupling block: F at its input x2, G at its input y1."""

    F: CouplingState
    G: CouplingState

    def push(self, dx: torch.Tensor) -> torch.Tensor:
        """Forward tangent: (dx1, dx2) → (dy1, dy2) = (dx1 + F'dx2, dx2 + G'dy1)."""
        dx1, dx2 = dx.chunk(2, dim=-1)
        dy1 = dx1 + self.F.jvp(dx2)
        return torch.cat([dy1, dx2 + self.G.jvp(dy1)], dim=-1)

    def pull(self, dy: torch.Tensor) -> torch.Tensor:
        """Inverse tangent: (dy1, dy2) → (dx1, dx2) = (dy1 − F'dx2, dy2 − G'dy1)."""
        dy1, dy2 = dy.chunk(2, dim=-1)
        dx2 = dy2 - self.G.jvp(dy1)
        return torch.cat([dy1 - self.F.jvp(dx2), dx2], dim=-1)


def coupling_state(coupling: Coupling, u: torch.Tensor) -> CouplingState:
    """The state of ``coupling`` at input u (N, half); see :class:`CouplingState`."""
    hidden, half = coupling.proj.shape
    if coupling.is_linear and half <= hidden:
        return CouplingState(coupling, u, None, None, coupling.linear.weight @ coupling.proj)
    pre = u @ coupling.proj.T
    features = coupling.activation(pre)
    return CouplingState(coupling, u, features, activation_slope(coupling.activation, pre, features))


def forward_states(model: RevMLP, x: torch.Tensor) -> tuple[list[BlockState], torch.Tensor]:
    """Run ``model`` on x (N, dim) keeping every coupling's state; returns (states, logits (N, O))."""
    states = []
    z = x
    with torch.no_grad():
        for block in model.blocks:
            x1, x2 = z.chunk(2, dim=-1)
            f = coupling_state(block.F, x2)
            y1 = x1 + f.output()
            g = coupling_state(block.G, y1)
            z = torch.cat([y1, x2 + g.output()], dim=-1)
            states.append(BlockState(f, g))
        return states, z @ model.readout.T


def pull_back(states: list[BlockState], target: torch.Tensor) -> list[torch.Tensor]:
    """Desired change of the last block's output (N, dim) → desired change of every block's output.

    t[D−1] = target, t[b−1] = J_{block b}⁻¹ t[b]: changing block b's output by t[b] (downstream
    blocks fixed) moves the last block's output by ``target`` to first order.
    """
    targets = [target]
    for state in reversed(states[1:]):
        targets.append(state.pull(targets[-1]))
    return targets[::-1]


def push_forward(states: list[BlockState], changes: dict[int, torch.Tensor]) -> list[torch.Tensor | None]:
    """Accumulated first-order change of every block's output when block b's output changes by changes[b].

    Returns s with s[b] = Σ_{c ≤ b} J_{c→b} changes[c] (None below the lowest changed block).
    """
    out: list[torch.Tensor | None] = []
    current = None
    for b, state in enumerate(states):
        if current is not None:
            current = state.push(current)
        if b in changes:
            current = changes[b] if current is None else current + changes[b]
        out.append(current)
    return out
