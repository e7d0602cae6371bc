"""Models whose training dynamics the toolkit studies: a reversible MLP and a plain MLP baseline."""

from dynamics.models.mlp import MLP
from dynamics.models.revmlp import Coupling, CouplingBlock, RevMLP

__all__ = ["MLP", "RevMLP", "CouplingBlock", "Coupling"]
