"""Empirical neural tangent kernel: a structured path for nn.Linear/Conv2d models and generic paths for any model.

``empirical_ntk(model, x1, x2=None, *, trace=True, method="auto", chunk_size=None, dtype=None, output=None,
max_memory=None)``
returns Θ = J(x1) J(x2)ᵀ over the model's trained parameters, (N1, N2) traced over outputs or
(N1, N2, O, O). See :func:`dynamics.ntk.api.empirical_ntk`.
"""

from dynamics.ntk.api import METHODS, empirical_ntk
from dynamics.ntk.structured import structured_problem

__all__ = ["empirical_ntk", "structured_problem", "METHODS"]
