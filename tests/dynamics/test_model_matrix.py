"""The model-family matrix (issue 21 §2): families × entry points, each cell correct within its stated
tolerance or a clear error at the first call. The matrix is documented in docs/guide/models.md.

Entry points and their independent references (``model_references``, no ``dynamics`` code):
- NTK: ``empirical_ntk`` (full kernel with x2, traced symmetric kernel) against dense per-sample
  Jacobians from loops of plain autograd in float64;
- capture: ``capture_representations`` against forward hooks copying by hand;
- GN: one ``KernelGN`` step (MSE) against δθ = −α (JᵀJ)⁺ Jᵀ ε with an explicit ``torch.linalg.pinv``;
- Recorder → analyze → report: two checkpoints recorded in a plain loop; the stored NTK,
  representations and parameters read back with plain xarray against the references of the model
  as it was at each checkpoint; the analysis' NTK alignment against ⟨Θ0, Θ1⟩/(‖Θ0‖‖Θ1‖) of the
  reference kernels; the report written.

Tolerances (relative Frobenius error): float64 models 1e-10; float16/bfloat16 models, whose NTK and
GN are computed in float32 and float64 from the half-precision weights, 1e-5 for the NTK against the
float64 reference of the same weights, the GN update within the half precision's rounding of the
parameters (eps·|θ|); capture (in chunks) against the hand-made copy (one batch) 4 eps of the model's
dtype, relative to the largest value.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import model_zoo as zoo
from dynamics import Recorder
from dynamics.capture import capture_representations
from dynamics.gauss_newton import KernelGN
from dynamics.ntk import empirical_ntk
from dynamics.wrappers import canonical_parameters
from model_references import dense_ntk, hooked_outputs, pinv_gn_step, traced

F64 = 1e-10


def compiled(dtype=torch.float64, backend="eager"):
    model, make_inputs = zoo.mlp(dtype)
    return torch.compile(model, backend=backend), make_inputs


def compiled_inductor(dtype=torch.float64):
    return compiled(dtype, backend="inductor")


def mlp_float16(dtype=None):
    return zoo.mlp(torch.float16)


def transformer_bfloat16(dtype=None):
    return zoo.transformer(torch.bfloat16)


#: family → (factory, layers to capture, tolerance of the NTK, slow)
FAMILIES = {
    "mlp": (zoo.mlp, ["1"], F64, False),
    "cnn_batchnorm_dropout": (zoo.cnn, ["norm", "drop"], F64, False),
    "transformer_tokens": (zoo.transformer, ["norm1", "attn", "sdpa", "mlp.1"], F64, False),
    "transformer_dict_inputs": (zoo.transformer_dict, ["inner.attn", "inner.final"], F64, True),
    "tuple_inputs": (zoo.two_inputs, ["embed", "lin"], F64, False),
    "gru": (zoo.gru, ["gru", "head"], F64, False),
    "frozen": (zoo.frozen, ["1", "3"], F64, False),
    "shared": (zoo.shared, ["inp", "branch"], F64, False),
    "buffers": (zoo.buffers, ["lin"], F64, False),
    "checkpointed": (zoo.checkpointed, ["hidden.1", "head"], F64, False),
    "checkpointed_reentrant": (zoo.checkpointed_reentrant, ["hidden.1", "head"], F64, False),
    "names_slash_unicode": (zoo.named, ["blocks.enc/0", "blocks.größe"], F64, False),
    "compiled": (compiled, ["1"], F64, False),
    "compiled_inductor": (compiled_inductor, ["1"], F64, True),
    "float16": (mlp_float16, ["1"], 1e-5, False),
    "bfloat16_transformer": (transformer_bfloat16, ["attn", "mlp.1"], 1e-5, True),
}


def _params(families):
    return [pytest.param(name, marks=pytest.mark.slow) if FAMILIES[name][3] else name for name in families]


def _network(model: nn.Module) -> nn.Module:
    """The module the researcher wrote (the reference never sees torch.compile's wrapper)."""
    return getattr(model, "_orig_mod", model)


def _float64(x):
    cast = lambda t: t.double() if t.is_floating_point() else t  # noqa: E731
    if isinstance(x, dict):
        return {k: cast(v) for k, v in x.items()}
    return tuple(cast(v) for v in x) if isinstance(x, tuple) else cast(x)


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm())


@pytest.mark.parametrize("family", _params(FAMILIES))
def test_ntk(family):
    make, _, tol, _ = FAMILIES[family]
    model, make_inputs = make()
    x1, x2 = make_inputs(3, 0), make_inputs(2, 1)
    full = empirical_ntk(model, x1, x2, trace=False)
    assert _relative(full, dense_ntk(_network(model), x1, x2)) < tol
    symmetric = empirical_ntk(model, x1)
    assert _relative(symmetric, traced(dense_ntk(_network(model), x1))) < tol
    assert torch.equal(symmetric, symmetric.T)


@pytest.mark.parametrize("family", _params(FAMILIES))
def test_capture(family):
    make, layers, _, _ = FAMILIES[family]
    model, make_inputs = make()
    x = make_inputs(4, 2)
    got = capture_representations(model, x, layers, chunk_size=3)
    want = hooked_outputs(_network(model), x, layers)
    for layer in layers:
        assert got[layer].dtype == want[layer].dtype   # chunks of 3 against one batch: BLAS round-off only
        eps = torch.finfo(want[layer].dtype).eps
        torch.testing.assert_close(got[layer], want[layer], rtol=4 * eps, atol=4 * eps * float(want[layer].abs().max()))


@pytest.mark.parametrize("family", _params(FAMILIES))
def test_kernel_gn_step(family):
    make, _, _, _ = FAMILIES[family]
    model, make_inputs = make()
    network = _network(model)
    x = make_inputs(2, 3)
    twin = copy.deepcopy(network).double().eval()   # ε of the eval-mode float64 model, the one GN linearises
    x64 = _float64(x)
    with torch.no_grad():
        n_out = twin(**x64) if isinstance(x, dict) else twin(*x64) if isinstance(x, tuple) else twin(x64)
        n_out = (n_out["logits"] if isinstance(n_out, dict) else n_out).reshape(2, -1)
    dtype = next(iter(canonical_parameters(model).values())).dtype
    y = torch.randn(n_out.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64).to(dtype)
    before = {name: p.detach().clone() for name, p in canonical_parameters(model).items()}
    expected = pinv_gn_step(network, x, (n_out.double() - y.double()), lr=0.5)
    KernelGN(model, lr=0.5, loss="mse", batchnorm="freeze").step(x, y)
    change = torch.cat([(p.detach().double() - before[name].double()).reshape(-1)
                        for name, p in canonical_parameters(model).items()])
    if dtype == torch.float64:
        assert _relative(change, expected) < 1e-8
    else:   # the update is rounded to the half precision, and so is θ + δθ
        scale = torch.cat([p.reshape(-1) for p in before.values()]).double().abs() + expected.abs()
        bound = 2 * torch.finfo(dtype).eps * scale + 1e-10 * expected.abs().max()   # + float64 round-off near 0
        assert torch.all((change - expected).abs() <= bound)


def _record_and_analyze(family: str, tmp_path):
    """Record two checkpoints of the family's model, analyze the store, check what was stored and
    analysed against the references; returns the store's path."""
    from analysis import analyze

    make, layers, tol, _ = FAMILIES[family]
    model, make_inputs = make()
    network = _network(model)
    x, y = make_inputs(5, 5), torch.arange(5) % 2
    path = tmp_path / "run.zarr"
    at_checkpoint = []
    generator = torch.Generator().manual_seed(6)
    with Recorder(path, model, (x, y), layers=layers, config={"optimizer": "sgd", "seed": 0}) as rec:
        for step in (0, 1):
            at_checkpoint.append(copy.deepcopy(network))
            rec.log(step, loss=1.0 - step / 2)
            rec.checkpoint(step, train_loss=1.0 - step / 2)
            with torch.no_grad():
                for p in canonical_parameters(model).values():
                    p.add_(0.05 * torch.randn(p.shape, generator=generator).to(p.dtype))
    checkpoints = xr.open_zarr(path, group="checkpoints")
    params = xr.open_zarr(path, group="params")
    kernels = []
    for i, snapshot in enumerate(at_checkpoint):
        want = traced(dense_ntk(snapshot, x))
        kernels.append(want)
        assert _relative(torch.as_tensor(checkpoints["ntk"].values[i]), want) < tol
        reps = hooked_outputs(snapshot, x, layers)
        stored = [k for k in checkpoints.data_vars if k.startswith("rep_")]
        assert len(stored) == len(layers)
        for layer in layers:
            key = next(k for k in stored if _layer_of(checkpoints[k]) == layer)
            np.testing.assert_array_equal(checkpoints[key].values[i], _stored(reps[layer]))
        names = {_param_of(params[k]): k for k in params.data_vars}
        for name, p in canonical_parameters(snapshot).items():
            np.testing.assert_array_equal(params[names[name]].values[i], _stored(p.detach()))
    result = analyze(path)
    k0, k1 = kernels
    alignment = float((k0 * k1).sum() / (k0.norm() * k1.norm()))
    stored = xr.open_zarr(path, group="analysis")["ntk_alignment_init"].values
    np.testing.assert_allclose(stored, [1.0, alignment], rtol=max(tol, 1e-9))
    np.testing.assert_allclose(result["ntk_alignment_init"].values, stored)
    return path


def _stored(t: torch.Tensor) -> np.ndarray:
    """What a run store holds for a tensor: half precisions as float32."""
    return (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy()


#: Families whose report is written in the default suite (the report does not depend on the model
#: beyond its names; every family's report is written in the slow suite).
REPORTED = ("mlp", "transformer_tokens", "names_slash_unicode")


def _cell(family: str):
    marks = [pytest.mark.slow] if FAMILIES[family][3] else []
    return pytest.param(family, marks=marks)


@pytest.mark.parametrize("family", [_cell(f) for f in FAMILIES])
def test_recorder_analyze_report(family, tmp_path):
    path = _record_and_analyze(family, tmp_path)
    if family in REPORTED:
        _check_report(path)


@pytest.mark.slow
@pytest.mark.parametrize("family", [_cell(f) for f in FAMILIES if f not in REPORTED])
def test_report_of_every_family(family, tmp_path):
    _check_report(_record_and_analyze(family, tmp_path))


def _check_report(path):
    from reports import write_report

    report = write_report(path)
    text = report.read_text(encoding="utf-8")
    assert report.is_file() and "NTK" in text


def _layer_of(variable: xr.DataArray) -> str:
    """The layer a stored representation belongs to: the name the store keeps beside its key."""
    return variable.attrs["name"]


def _param_of(variable: xr.DataArray) -> str:
    return variable.attrs["name"]


def test_a_module_run_twice_is_a_clear_error_at_the_first_capture():
    model, make_inputs = zoo.shared()
    with pytest.raises(ValueError, match="'shared' was called 2 times"):
        capture_representations(model, make_inputs(3, 0), ["shared"])
