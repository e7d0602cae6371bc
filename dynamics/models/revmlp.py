"""Reversible MLP built from additive coupling blocks (Buffelli et al. 2024, §3; Dinh et al. 2015).

Block b maps x = (x1, x2) to y = (y1, y2) with
    y1 = x1 + F(x2),    y2 = x2 + G(y1),    F(u) = W_F σ(C_F u) + b_F,   G likewise,
where C_F (hidden × dim/2) is a fixed random projection (a buffer, never trained) and the
``nn.Linear`` W_F, b_F is trained. Each block is inverted exactly by x2 = y2 − G(y1), x1 = y1 − F(x2).
A fixed readout R (n_classes × dim) with orthonormal rows maps the last block's output to the logits.
R is orthonormal to float64 round-off when built; after ``.to(dtype)`` / ``.half()`` or an edit it
may not be, and nothing relies on it: :class:`~dynamics.gauss_newton.ReversibleGN` lifts targets
through R's pseudo-inverse (exact for any R of full row rank).

Because a block's output is *linear* in its trained weights given the block's input, the exact
Gauss–Newton update is tractable (see :mod:`dynamics.gauss_newton.reversible`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dynamics.models.layers import (check_input, check_positive_float, check_positive_int, make_activation,
                                    seeded_linear)


class Coupling(nn.Module):
    """F(u) = linear(σ(u Cᵀ)): fixed projection ``proj`` C (hidden, half), trained ``linear``.

    Shapes: u (..., half) → features (..., hidden) → output (..., half).
    """

    def __init__(self, half: int, hidden: int, activation: str, generator: torch.Generator,
                 dtype: torch.dtype, device: torch.device | str | None, init_std: float | None = None,
                 projection: str = "input") -> None:
        super().__init__()
        scale = math.sqrt(half if projection == "input" else hidden)
        proj = torch.randn(hidden, half, generator=generator, dtype=torch.float64) / scale
        self.register_buffer("proj", proj.to(dtype=dtype, device=device))
        self.activation = make_activation(activation)
        self.linear = seeded_linear(hidden, half, generator, dtype=dtype, device=device, init_std=init_std)

    @property
    def is_linear(self) -> bool:
        """True when σ is the identity, so the features u Cᵀ have rank ≤ half."""
        return isinstance(self.activation, nn.Identity)

    def features(self, u: torch.Tensor) -> torch.Tensor:
        """σ(u Cᵀ), the input of the trained linear layer: (..., half) → (..., hidden)."""
        return self.activation(u @ self.proj.T)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(u))


class CouplingBlock(nn.Module):
    """One additive coupling block y1 = x1 + F(x2), y2 = x2 + G(y1); (..., dim) → (..., dim)."""

    def __init__(self, dim: int, hidden: int, activation: str, generator: torch.Generator,
                 dtype: torch.dtype, device: torch.device | str | None, init_std: float | None = None,
                 projection: str = "input") -> None:
        super().__init__()
        half = dim // 2
        self.F = Coupling(half, hidden, activation, generator, dtype, device, init_std, projection)
        self.G = Coupling(half, hidden, activation, generator, dtype, device, init_std, projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        y1 = x1 + self.F(x2)
        y2 = x2 + self.G(y1)
        return torch.cat([y1, y2], dim=-1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """x from y = block(x): x2 = y2 − G(y1), x1 = y1 − F(x2)."""
        y1, y2 = y.chunk(2, dim=-1)
        x2 = y2 - self.G(y1)
        x1 = y1 - self.F(x2)
        return torch.cat([x1, x2], dim=-1)


class RevMLP(nn.Module):
    """Reversible MLP: ``depth`` coupling blocks on R^dim, then a fixed orthonormal readout to R^n_classes.

    Args:
        dim: input features (even; split into halves of dim/2).
        hidden: width of each coupling function's fixed projection.
        depth: number of coupling blocks.
        n_classes: outputs O (≤ dim).
        first_linear: the first block's F and G use no nonlinearity (σ = identity), as in the
            published architecture; their features then have rank ≤ dim/2.
        activation: σ of the other blocks ("relu", "tanh", "gelu", "identity").
        seed: fixes projections, readout and initial weights (a local generator; global RNG untouched).
        init_std: None (default) draws trained weights and biases from U(−1/√hidden, 1/√hidden) (torch's
            default); a float > 0 draws trained weights from N(0, init_std²) with zero biases — the
            published initialisation uses 1e-3.
        projection: scale of the fixed projections C: "input" (default) entries N(0, 1/(dim/2)), unit
            variance features for unit-variance inputs; "hidden" entries N(0, 1/hidden), as in the
            authors' released code (N(0, 1/8000) at width 8000).

    Shapes: ``forward`` (N, dim) → (N, n_classes); ``embed`` (N, dim) → (N, dim), the last block's
    output; ``inverse`` (N, dim) → (N, dim) inverts ``embed`` exactly.
    Trained parameters: ``blocks.{b}.{F,G}.linear.{weight,bias}``.
    """

    def __init__(self, dim: int, hidden: int, depth: int, n_classes: int, *, first_linear: bool = True,
                 activation: str = "relu", seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None, init_std: float | None = None,
                 projection: str = "input") -> None:
        super().__init__()
        if init_std is not None:
            check_positive_float("init_std", init_std)
        if projection not in ("input", "hidden"):
            raise ValueError(f"projection must be 'input' or 'hidden', got {projection!r}")
        check_positive_int("dim", dim, 2)
        check_positive_int("hidden", hidden)
        check_positive_int("depth", depth)
        check_positive_int("n_classes", n_classes)
        check_positive_int("seed", seed, 0)
        if dim % 2:
            raise ValueError(f"RevMLP needs an even dim to split into halves, got dim={dim}")
        if n_classes > dim:
            raise ValueError(f"n_classes={n_classes} exceeds dim={dim}; an orthonormal readout needs n_classes <= dim")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        make_activation(activation)  # validate the name early
        self.dim, self.hidden, self.depth, self.n_classes = dim, hidden, depth, n_classes
        self.first_linear, self.activation, self.seed = first_linear, activation, seed
        self.init_std, self.projection = init_std, projection
        generator = torch.Generator().manual_seed(seed)
        self.blocks = nn.ModuleList(
            CouplingBlock(dim, hidden, "identity" if (b == 0 and first_linear) else activation,
                          generator, dtype, device, init_std, projection)
            for b in range(depth)
        )
        gaussian = torch.randn(dim, n_classes, generator=generator, dtype=torch.float64)
        q, _ = torch.linalg.qr(gaussian)
        self.register_buffer("readout", q.T.contiguous().to(dtype=dtype, device=device))

    @property
    def representation_layers(self) -> list[str]:
        """Default modules whose outputs are recorded as hidden representations: every block."""
        return [f"blocks.{b}" for b in range(self.depth)]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last coupling block, (N, dim)."""
        check_input(x, self.dim, self.readout.dtype, "RevMLP")
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x) @ self.readout.T

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """The input x with ``embed(x) == z``, by inverting the blocks in reverse order."""
        check_input(z, self.dim, self.readout.dtype, "RevMLP.inverse")
        for block in reversed(self.blocks):
            z = block.inverse(z)
        return z

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, hidden={self.hidden}, depth={self.depth}, n_classes={self.n_classes}, "
                f"first_linear={self.first_linear}, activation={self.activation!r}, seed={self.seed}")
