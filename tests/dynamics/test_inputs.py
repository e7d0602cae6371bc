"""Token, tuple and dict inputs (issue 21 item 10): every entry point takes what the model's forward takes.

References (``model_references``, no ``dynamics`` code): dense per-sample Jacobians by loops of plain
autograd, forward hooks copying by hand, an explicit pseudo-inverse GN step; stores read back with
plain xarray. Tolerances: float64 models, rtol 1e-10 (round-off only).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from dynamics import Recorder, inputs, open_run
from dynamics.capture import capture_representations
from dynamics.gauss_newton import KernelGN
from dynamics.ntk import empirical_ntk
from model_references import dense_ntk, hooked_outputs, pinv_gn_step, trained, traced
from model_zoo import LENGTH, VOCAB, transformer, transformer_dict, two_inputs

F64 = dict(rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", [transformer, transformer_dict, two_inputs])
def test_ntk_of_token_tuple_and_dict_inputs_matches_dense_jacobians(make):
    model, make_inputs = make()
    x1, x2 = make_inputs(3, 0), make_inputs(2, 1)
    full = empirical_ntk(model, x1, x2, trace=False)
    torch.testing.assert_close(full, dense_ntk(model, x1, x2), **F64)
    torch.testing.assert_close(empirical_ntk(model, x1), traced(dense_ntk(model, x1)), **F64)


def test_the_issue_example_an_embedding_model_takes_int64_tokens():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(VOCAB, 6), nn.Flatten(), nn.Linear(6 * LENGTH, 3)).double()
    tokens = torch.randint(0, VOCAB, (4, LENGTH))
    torch.testing.assert_close(empirical_ntk(model, tokens), traced(dense_ntk(model, tokens)), **F64)


def test_capture_of_dict_inputs_matches_hooks_by_hand():
    model, make_inputs = transformer_dict()
    x = make_inputs(5, 2)
    names = ["inner.norm1", "inner.attn", "inner.sdpa", "inner.mlp.1"]
    got = capture_representations(model, x, names, chunk_size=2)
    want = hooked_outputs(model, x, names)
    for name in names:
        torch.testing.assert_close(got[name], want[name], **F64)


def test_kernel_gn_step_on_tokens_is_the_pseudo_inverse_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(VOCAB, 3), nn.Flatten(), nn.Linear(3 * LENGTH, 2)).double()
    x = torch.randint(0, VOCAB, (3, LENGTH), generator=torch.Generator().manual_seed(4))
    y = torch.randn(3, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    before = torch.cat([p.detach().reshape(-1) for p in trained(model).values()])
    with torch.no_grad():
        epsilon = model(x) - y
    expected = pinv_gn_step(model, x, epsilon, lr=0.5)
    KernelGN(model, lr=0.5, loss="mse").step(x, y)
    after = torch.cat([p.detach().reshape(-1) for p in trained(model).values()])
    torch.testing.assert_close(after - before, expected, rtol=1e-8, atol=1e-10)


def test_kernel_gn_step_on_dict_inputs_with_a_dict_output():
    model, make_inputs = transformer_dict()
    x = make_inputs(2, 3)
    y = torch.randint(0, VOCAB, (2,))
    head = lambda out: out["logits"][:, -1]                       # noqa: E731  next-token logits
    with torch.no_grad():
        logits = head(model(**x))
    epsilon = torch.softmax(logits, 1) - nn.functional.one_hot(y, VOCAB).double()
    before = torch.cat([p.detach().reshape(-1) for p in trained(model).values()])

    class Head(nn.Module):                                         # the reference sees the same output
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kw):
            return head(self.inner(**kw))
    expected = pinv_gn_step(Head(model), x, epsilon, lr=0.1)
    KernelGN(model, lr=0.1, loss="ce", output=head).step(x, y)
    after = torch.cat([p.detach().reshape(-1) for p in trained(model).values()])
    torch.testing.assert_close(after - before, expected, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("make, layout", [
    (transformer, {"x": ("probe", "position")}),
    (transformer_dict, {"x_input_ids": ("probe", "x_input_ids_dim1"),
                        "x_attention_mask": ("probe", "x_attention_mask_dim1")}),
    (two_inputs, {"x_0": ("probe", "x_0_dim1"), "x_1": ("probe", "x_1_dim1")}),
])
def test_recorder_stores_the_probe_in_its_structure_and_resumes(tmp_path, make, layout):
    model, make_inputs = make()
    x, y = make_inputs(6, 7), torch.arange(6) % 2
    path = tmp_path / "run.zarr"
    with Recorder(path, model, (x, y), layers=[], ntk_background=False) as rec:
        rec.checkpoint(0)
    probe = xr.open_zarr(path, group="probe")
    assert set(probe.data_vars) == set(layout) | {"y"}
    for name, dims in layout.items():
        assert probe[name].dims == dims
    for key, leaf in inputs.leaves(x):
        name = "x" if key is None else f"x_{key}"
        np.testing.assert_array_equal(probe[name].values, leaf.numpy())
        assert probe[name].dtype == leaf.numpy().dtype
        if isinstance(key, str):
            assert probe[name].attrs["input_keyword"] == key
        elif isinstance(key, int):
            assert probe[name].attrs["input_position"] == key
    ntk = xr.open_zarr(path, group="checkpoints")["ntk"].values[0]
    np.testing.assert_allclose(ntk, traced(dense_ntk(model, x)).numpy(), rtol=1e-10)
    with Recorder(path, model, (x, y), layers=[], resume=True, ntk_background=False) as rec:   # same probe: fine
        rec.checkpoint(1)
    assert open_run(path)["checkpoints"].sizes["checkpoint"] == 2
    other = inputs.map_leaves(lambda t: t.flip(0), x)
    with pytest.raises(Exception, match="probe given differs"):
        Recorder(path, model, (other, y), layers=[], resume=True)


def test_analysis_opens_a_store_with_a_dict_probe(tmp_path):
    from analysis import analyze, open_runs
    model, make_inputs = transformer_dict()
    x, y = make_inputs(6, 7), torch.arange(6) % 2
    paths = []
    for seed in (0, 1):
        path = tmp_path / f"run{seed}.zarr"
        with Recorder(path, model, (x, y), layers=["inner.mlp.1"], config={"seed": seed}) as rec:
            rec.checkpoint(0, train_loss=1.0)
            rec.checkpoint(1, train_loss=0.5)
        paths.append(path)
    result = analyze(paths[0], write=False)
    assert np.isfinite(result["ntk_alignment_init"].values).all()
    combined = open_runs(paths)
    assert np.isfinite(combined["cka_between"].values).all()      # equal dict probes are comparable


@pytest.mark.parametrize("bad, error, match", [
    ({"ids": torch.zeros(3, 2, dtype=torch.long), "mask": torch.ones(2, 2)}, ValueError,
     r"same number of samples.*ids: \(3, 2\) int64, mask: \(2, 2\) float32"),
    ({"not a name": torch.zeros(3, 2)}, TypeError, "identifiers"),
    ({}, ValueError, "empty"),
    ((torch.zeros(3, 2), np.zeros((3, 2))), TypeError, r"x\[1\] must be a torch.Tensor"),
    (torch.zeros(3, 2, dtype=torch.complex64), TypeError, "complex"),
    ([[1.0, 2.0]], TypeError, r"x\[0\] must be a torch.Tensor, got list"),
])
def test_bad_input_structures_are_refused_naming_them(bad, error, match):
    with pytest.raises(error, match=match):
        inputs.check_inputs(bad, "x")
    model = nn.Linear(2, 2)
    with pytest.raises(error, match=match.replace("x", "x1", 1) if match.startswith("x") else match):
        empirical_ntk(model, bad)


def test_x2_must_have_the_structure_of_x1():
    model, make_inputs = transformer_dict()
    x = make_inputs(2, 0)
    with pytest.raises(ValueError, match="structure"):
        empirical_ntk(model, x, x["input_ids"])
    with pytest.raises(ValueError, match=r"x2\['input_ids'\] samples have shape \(3,\)"):
        empirical_ntk(model, x, {k: v[:, :3] for k, v in x.items()})


def test_output_selection():
    model, make_inputs = transformer_dict()
    x = make_inputs(2, 0)
    by_key = empirical_ntk(model, x, output="logits")
    torch.testing.assert_close(by_key, empirical_ntk(model, x), **F64)
    by_callable = empirical_ntk(model, x, output=lambda out: out["logits"][:, 0])
    full = dense_ntk(model, x)                                        # logits flattened: (position, vocab)
    torch.testing.assert_close(by_callable, traced(full[:, :, :VOCAB, :VOCAB]), **F64)

    class NoLogits(nn.Module):
        def forward(self, x):
            return {"scores": x * 2}
    with pytest.raises(ValueError, match=r"without 'logits' \(keys \['scores'\]\); choose the studied output"):
        empirical_ntk(nn.Sequential(nn.Linear(2, 2), NoLogits()), torch.randn(3, 2))
    with pytest.raises(TypeError, match="output must be None"):
        empirical_ntk(model, x, output=2.5)
    torch.testing.assert_close(inputs.select_output((torch.ones(2), torch.zeros(2))), torch.ones(2))
    torch.testing.assert_close(inputs.select_output((torch.ones(2), torch.zeros(2)), 1), torch.zeros(2))


def test_only_floating_leaves_are_cast():
    x = {"ids": torch.arange(4).reshape(2, 2), "mask": torch.ones(2, 2, dtype=torch.bool), "f": torch.ones(2, 1)}
    out = inputs.prepare(x, dtype=torch.float64)
    assert out["ids"].dtype == torch.int64 and out["mask"].dtype == torch.bool and out["f"].dtype == torch.float64
