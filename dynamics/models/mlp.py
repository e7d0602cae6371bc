"""Plain (non-reversible) multilayer perceptron, the baseline architecture."""

from __future__ import annotations

import torch
from torch import nn

from dynamics.models.layers import check_input, check_positive_int, make_activation, seeded_linear


class MLP(nn.Module):
    """x → σ(W_1 x + b_1) → … → σ(W_depth h + b_depth) → W_out h + b_out.

    Args:
        dim: input features.
        hidden: width of every hidden layer.
        depth: number of hidden layers (≥ 1).
        n_classes: outputs O.
        activation: "relu", "tanh", "gelu" or "identity".
        seed: fixes the initial weights through a local generator.

    Shapes: (N, dim) → (N, n_classes). Trained parameters: ``layers.{i}.{weight,bias}`` and
    ``readout.{weight,bias}``; hidden representations are the outputs of ``activations.{i}``.
    """

    def __init__(self, dim: int, hidden: int, depth: int, n_classes: int, *, activation: str = "relu",
                 seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("hidden", hidden)
        check_positive_int("depth", depth)
        check_positive_int("n_classes", n_classes)
        check_positive_int("seed", seed, 0)
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        self.dim, self.hidden, self.depth, self.n_classes = dim, hidden, depth, n_classes
        self.activation, self.seed = activation, seed
        generator = torch.Generator().manual_seed(seed)
        widths = [dim] + [hidden] * depth
        self.layers = nn.ModuleList(
            seeded_linear(a, b, generator, dtype=dtype, device=device) for a, b in zip(widths, widths[1:])
        )
        self.activations = nn.ModuleList(make_activation(activation) for _ in range(depth))
        self.readout = seeded_linear(hidden, n_classes, generator, dtype=dtype, device=device)

    @property
    def representation_layers(self) -> list[str]:
        """Default modules whose outputs are recorded as hidden representations: every activation."""
        return [f"activations.{i}" for i in range(self.depth)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.dim, self.readout.weight.dtype, "MLP")
        for layer, activation in zip(self.layers, self.activations):
            x = activation(layer(x))
        return self.readout(x)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, hidden={self.hidden}, depth={self.depth}, n_classes={self.n_classes}, "
                f"activation={self.activation!r}, seed={self.seed}")
