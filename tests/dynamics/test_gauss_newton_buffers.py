"""ReversibleGN stays exact after conversions or edits that break the readout's orthonormality (issue 11, case 5).

The kind: a buffer invariant the solver could assume (orthonormal rows of the fixed readout R) that
``.double()``, ``.to(dtype)``, a ``.half()`` round trip or a user edit breaks. The step must not depend
on it; ρ is checked against a dense jacrev J in float64.
"""

from __future__ import annotations

import pytest
import torch

from dynamics.gauss_newton import ReversibleGN
from dynamics.models import RevMLP
from test_gauss_newton_reference import dense_jacobian, dense_residual, flat_params, reference_targets

F64 = torch.float64


def _edited(model):
    with torch.no_grad():  # a full-row-rank but far from orthonormal readout
        gen = torch.Generator().manual_seed(5)
        model.readout.copy_(model.readout * torch.tensor([[1.0], [3.0], [0.2], [1.5]], dtype=F64)
                            + 0.3 * torch.randn(model.readout.shape, dtype=F64, generator=gen))
    return model


BUILDS = {
    "double": lambda: RevMLP(16, 64, 3, 4, seed=0).double(),
    "to_float64": lambda: RevMLP(16, 64, 3, 4, seed=0).to(torch.float64),
    "half_double": lambda: RevMLP(16, 64, 3, 4, seed=0).half().double(),
    "edited_readout": lambda: _edited(RevMLP(16, 64, 3, 4, seed=0, dtype=F64)),
    "built_float64": lambda: RevMLP(16, 64, 3, 4, seed=0, dtype=F64),
}


@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("combine,solver", [("exact", "gram"), ("exact", "svd")])
def test_step_is_exact_whatever_the_readout_buffer(build, combine, solver):
    model = BUILDS[build]()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, 16, dtype=F64, generator=gen)
    y = torch.randint(0, 4, (20,), generator=gen)
    jac = dense_jacobian(model, x)
    with torch.no_grad():
        desired = -0.1 * reference_targets(model(x), y, "ce")
    before = flat_params(model)
    report = ReversibleGN(model, lr=0.1, combine=combine, solver=solver).step(x, y)
    rho = dense_residual(jac, flat_params(model) - before, desired)
    assert rho <= 1e-12, rho  # was 1.6e-8 (double), 1.5e-4 (half round trip) before the fix
    assert report.residual <= 1e-12


def test_readout_really_is_non_orthonormal_in_these_cases():
    for build in ("double", "half_double", "edited_readout"):
        r = BUILDS[build]().readout
        assert float((r @ r.T - torch.eye(4, dtype=F64)).abs().max()) > 1e-9


@pytest.mark.parametrize("edit", ["in_place", "replaced"])
def test_projection_edited_between_steps_is_refactored(edit):
    """The float64 factor of a linear coupling's fixed projection is cached per optimiser; editing the
    buffer in place or replacing it must invalidate it."""
    model = RevMLP(16, 64, 2, 4, seed=0, dtype=F64)  # first block linear: LinearSolver
    opt = ReversibleGN(model, lr=0.1)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 16, dtype=F64, generator=gen)
    y = torch.randint(0, 4, (6,), generator=gen)
    opt.step(x, y)
    coupling = model.blocks[0].F
    with torch.no_grad():
        if edit == "in_place":
            coupling.proj.mul_(torch.linspace(0.5, 2.0, coupling.proj.shape[1], dtype=F64))
        else:
            coupling.proj = coupling.proj * 3.0 + 0.1
    jac = dense_jacobian(model, x)
    with torch.no_grad():
        desired = -0.1 * reference_targets(model(x), y, "ce")
    before = flat_params(model)
    opt.step(x, y)
    assert dense_residual(jac, flat_params(model) - before, desired) <= 1e-12
