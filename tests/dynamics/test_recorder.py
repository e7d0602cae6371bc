"""Recorder: what it stores (checked against brute-force references), its bookkeeping and its errors."""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn
import xarray as xr

import dynamics
from dynamics import Recorder, open_run
from dynamics.errors import StoreError, StoreLockedError
from dynamics.models import MLP, RevMLP
from dynamics.schedules import at, every


def _ntk_reference(model, x):
    """Θ = Σ_o J_o J_oᵀ from the dense Jacobian of all outputs w.r.t. the trained parameters (jacrev)."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = dict(model.named_buffers())
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(model, (p, buffers), (x,)))(params)
    n, o = x.shape[0], model.n_classes
    dense = torch.cat([j.reshape(n, o, -1) for j in jac.values()], dim=-1)       # (N, O, P)
    return torch.einsum("nop,mop->nm", dense, dense)


def _reps_reference(model, x):
    """Hidden representations computed by hand from the model's sub-modules."""
    reps, h = {}, x
    with torch.no_grad():
        if isinstance(model, MLP):
            for i, (layer, act) in enumerate(zip(model.layers, model.activations)):
                h = act(layer(h))
                reps[f"rep_activations__{i}"] = h.clone()
        else:
            for b, block in enumerate(model.blocks):
                h = block(h)
                reps[f"rep_blocks__{b}"] = h.clone()
    return reps


def _model(kind, dtype):
    if kind == "mlp":
        return MLP(6, 10, 2, 3, seed=3, dtype=dtype)
    return RevMLP(6, 10, 3, 3, seed=3, dtype=dtype, activation="tanh")


def _probe(n=7, d=6, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=dtype), torch.randint(0, 3, (n,), generator=gen)


@pytest.mark.parametrize("kind", ["mlp", "rev"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize("n_probe", [1, 5, 9])
def test_checkpoints_match_brute_force_references(tmp_path, kind, dtype, tol, n_probe):
    torch.manual_seed(0)
    model = _model(kind, dtype)
    x, y = _probe(n_probe, dtype=dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    expected = []
    with Recorder(tmp_path / "run.zarr", model, (x, y), schedule=at([0, 2])) as rec:
        for step in range(4):
            if rec.checkpoint(step, epoch=step, train_loss=float(step)):
                expected.append(({k: v.detach().clone() for k, v in model.named_parameters()},
                                 _ntk_reference(model, x), _reps_reference(model, x)))
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    tree = open_run(tmp_path / "run.zarr")
    ck, params = tree["checkpoints"], tree["params"]
    np.testing.assert_array_equal(ck["checkpoint_step"].values, [0, 2])
    np.testing.assert_array_equal(ck["train_loss"].values, [0.0, 2.0])
    assert ck["ntk"].dims == ("checkpoint", "probe", "probe_") and ck["ntk"].dtype == np.dtype(str(dtype)[6:])
    for i, (weights, ntk, reps) in enumerate(expected):
        for name, value in weights.items():
            np.testing.assert_array_equal(params[name.replace(".", "__")].values[i], value.numpy())
        np.testing.assert_allclose(ck["ntk"].values[i], ntk.numpy(), rtol=tol, atol=tol * ntk.abs().max().item())
        assert set(reps) == {v for v in ck.data_vars if v.startswith("rep_")}
        for name, rep in reps.items():
            assert ck[name].dims == ("checkpoint", "probe", f"unit_{name[4:]}")
            np.testing.assert_allclose(ck[name].values[i], rep.numpy(), rtol=tol, atol=tol)
    assert not any(v.endswith("readout") for v in params.data_vars)   # RevMLP readout is a buffer


def test_log_buffers_rows_and_fills_missing_names(tmp_path):
    model = MLP(6, 4, 1, 3)
    with Recorder(tmp_path / "r.zarr", model, _probe(dtype=torch.float32), flush_every=3, ntk=False,
                  layers=[]) as rec:
        for step in range(0, 20, 2):
            extra = {"late": step * 1.0} if step >= 6 else {}
            gone = {"early": -step} if step < 10 else {}
            rec.log(step, epoch=step // 4, loss=torch.tensor(step / 2), **extra, **gone)
            committed = 3 * ((step // 2 + 1) // 3)
            assert rec.last_step == (None if committed == 0 else 2 * committed - 2)
    m = xr.open_zarr(tmp_path / "r.zarr", group="metrics")
    steps = np.arange(0, 20, 2)
    np.testing.assert_array_equal(m["step"].values, steps)
    np.testing.assert_array_equal(m["epoch"].values, steps // 4)
    np.testing.assert_array_equal(m["loss"].values, steps / 2)
    np.testing.assert_array_equal(m["late"].values, np.where(steps >= 6, steps, np.nan))
    np.testing.assert_array_equal(m["early"].values, np.where(steps < 10, -steps, np.nan))
    assert rec.last_step == 18


def test_nonfinite_values_are_nan_counted_and_warned_once(tmp_path):
    """One warning per Recorder, at the first non-finite value (naming the variable and the step);
    every later one is stored as NaN and counted in ``nonfinite`` without a warning."""
    with Recorder(tmp_path / "r.zarr", MLP(6, 4, 1, 3), _probe(dtype=torch.float32), ntk=False, layers=[]) as rec:
        rec.log(0, loss=1.0)
        with pytest.warns(RuntimeWarning, match=r"non-finite loss=inf is stored as NaN at step 1 \(metrics/loss of .*r\.zarr\)"):
            rec.log(1, loss=math.inf)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rec.log(2, loss=torch.tensor(float("nan")))
            rec.checkpoint(2, test_loss=np.float32("-inf"))
    tree = open_run(tmp_path / "r.zarr")
    np.testing.assert_array_equal(tree["metrics"]["loss"].values, [1.0, np.nan, np.nan])
    assert json.loads(tree.attrs["nonfinite"]) == {
        "metrics": {"loss": {"count": 2, "steps": [[1, 2]]}},
        "checkpoints": {"test_loss": {"count": 1, "steps": [[2, 2]]}}}


def test_a_diverged_model_is_stored_as_it_is_with_one_warning(tmp_path):
    """Parameters that turn NaN/Inf at step 2 (a diverged run): parameters, NTK (also from the worker
    thread) and representations are stored as they are, counted per variable in ``nonfinite``, and
    the Recorder warns once, at the first, naming the variable and the step."""
    model = MLP(6, 4, 1, 3, seed=0)
    path = tmp_path / "d.zarr"
    with Recorder(path, model, _probe(dtype=torch.float32)) as rec:
        for step in range(4):
            if step == 2:
                with torch.no_grad():
                    model.layers[0].weight[0, 0] = float("nan")
                    model.readout.bias[0] = float("inf")
            if step < 2:
                rec.checkpoint(step)
                continue
            with pytest.warns(RuntimeWarning) if step == 2 else warnings.catch_warnings() as caught:
                if step == 3:
                    warnings.simplefilter("error")
                rec.checkpoint(step)
            if step == 2:
                assert len(caught) == 1
                assert re.match(r"non-finite values in (\w+) are stored as they are at step 2 \((checkpoints|params)/\1 ",
                                str(caught[0].message))
        rec.flush()
    tree = open_run(path)
    assert np.isnan(tree["params"]["layers__0__weight"].values[2:, 0, 0]).all()
    assert np.isinf(tree["params"]["readout__bias"].values[2:, 0]).all()
    assert np.isfinite(tree["checkpoints"]["ntk"].values[:2]).all() and np.isnan(tree["checkpoints"]["ntk"].values[2:]).any()
    counts = json.loads(tree.attrs["nonfinite"])
    assert counts["params"] == {"layers__0__weight": {"count": 2, "steps": [[2, 3]]},
                                "readout__bias": {"count": 2, "steps": [[2, 3]]}}
    assert counts["checkpoints"]["ntk"] == {"count": 2, "steps": [[2, 3]]}
    assert counts["checkpoints"]["rep_activations__0"]["count"] == 2


@pytest.mark.parametrize("value,text", [("0.5", "str"), ([1.0], "list"), (torch.ones(2), "2 elements"),
                                        (np.ones(3), "3 elements"), (None, "NoneType"), (1 + 2j, "complex")])
def test_non_scalar_values_raise_type_error_naming_the_key(tmp_path, value, text):
    with Recorder(tmp_path / "r.zarr", MLP(6, 4, 1, 3), _probe(dtype=torch.float32), ntk=False, layers=[]) as rec:
        rec.log(0, loss=1.0)
        with pytest.raises(TypeError, match=f"'bad_value'.*{text}"):
            rec.log(1, loss=2.0, bad_value=value)
        with pytest.raises(TypeError, match="'bad_value'"):
            rec.checkpoint(1, bad_value=value)
        rec.log(1, loss=3.0)                              # the failed call left no row behind
    np.testing.assert_array_equal(open_run(tmp_path / "r.zarr")["metrics"]["loss"].values, [1.0, 3.0])


def test_step_order_and_names_are_validated(tmp_path):
    with Recorder(tmp_path / "r.zarr", MLP(6, 4, 1, 3), _probe(dtype=torch.float32), ntk=False, layers=[],
                  schedule=every(2)) as rec:
        rec.log(3, loss=1.0)
        for bad in (3, 2):
            with pytest.raises(ValueError, match=f"log step {bad} is not after the previous step 3"):
                rec.log(bad, loss=1.0)
        with pytest.raises(TypeError, match="1.5"):
            rec.log(1.5, loss=1.0)
        with pytest.raises(ValueError, match="-4"):
            rec.log(-4, loss=1.0)
        with pytest.raises(ValueError, match="'ntk' is reserved"):
            rec.checkpoint(4, ntk=1.0)
        with pytest.raises(ValueError, match="'checkpoint' is reserved"):
            rec.log(5, checkpoint=1.0)
        with pytest.raises(ValueError, match="'rep_x' is reserved"):
            rec.checkpoint(4, rep_x=1.0)
        with pytest.raises(ValueError, match="''"):
            rec.log(5, **{"": 1.0})
        assert rec.checkpoint(4) and not rec.checkpoint(5)
        with pytest.raises(ValueError, match="checkpoint step 5 is not after the previous checkpoint step 5"):
            rec.checkpoint(5)
        assert rec.checkpoint_steps == [4]


def _with_parameter(model: nn.Module, *path: str) -> nn.Module:
    """``model`` with a trained parameter at the dotted ``path`` (sub-modules made as needed)."""
    owner = model
    for part in path[:-1]:
        if not hasattr(owner, part):
            owner.add_module(part, nn.Module())
        owner = getattr(owner, part)
    owner.register_parameter(path[-1], nn.Parameter(torch.zeros(2)))
    return model


def test_bad_constructor_arguments(tmp_path):
    model = MLP(6, 4, 1, 3)
    x, y = _probe(dtype=torch.float32)
    bad_x = x.clone()
    bad_x[2, 1] = float("nan")
    cases = [
        (dict(model="net"), TypeError, "model must be a torch.nn.Module"),
        (dict(probe=x), TypeError, "probe must be a pair"),
        (dict(probe=(bad_x, y)), ValueError, "probe x contains NaN or Inf"),
        (dict(probe=(x, y[:3])), ValueError, "7 samples but y has 3"),
        (dict(probe=(x.long(), y)), ValueError, r"probe x of shape \(7, 6\) does not fit the model.*int64"),
        (dict(config=[1]), TypeError, "config must be a dict"),
        (dict(layers=["nope"]), ValueError, "nope"),
        (dict(schedule=3), TypeError, "3"),
        (dict(ntk_chunk_size=0), ValueError, "ntk_chunk_size must be >= 1, got 0"),
        (dict(flush_every=1.5), TypeError, "1.5"),
        (dict(model=_with_parameter(MLP(6, 4, 1, 3), "step")), ValueError,
         "parameter 'step' would be stored as params/step, which is taken by the group itself"),
    ]
    for override, error, text in cases:
        kwargs = dict(model=model, probe=(x, y))
        kwargs.update(override)
        with pytest.raises(error, match=text):
            Recorder(tmp_path / "r.zarr", kwargs.pop("model"), kwargs.pop("probe"), **kwargs)
        assert not (tmp_path / "r.zarr").exists()


def test_resume_rules(tmp_path):
    model = MLP(6, 4, 1, 3)
    probe = _probe(dtype=torch.float32)
    path = tmp_path / "r.zarr"
    with pytest.raises(StoreError, match="does not exist"):
        Recorder(path, model, probe, resume=True)
    with Recorder(path, model, probe, config={"lr": 0.1}, ntk=False, layers=[]) as rec:
        rec.log(0, loss=1.0)
        rec.checkpoint(0)
        with pytest.raises(StoreLockedError):
            Recorder(path, model, probe, resume=True)
    with pytest.raises(StoreError, match="already exists"):
        Recorder(path, model, probe)
    with pytest.raises(StoreError, match="probe given differs"):
        Recorder(path, model, _probe(dtype=torch.float32, seed=1), resume=True)
    with pytest.raises(StoreError, match=r"config differs .* \['lr'\]"):
        Recorder(path, model, probe, config={"lr": 0.2}, resume=True)
    with Recorder(path, model, probe, config={"lr": 0.1}, resume=True, ntk=False, layers=[]) as rec:
        assert rec.last_step == 0 and rec.checkpoint_steps == [0]
        assert open_run(path).attrs["status"] == "running"
        rec.log(1, loss=2.0)
        rec.checkpoint(1)
    tree = open_run(path)
    np.testing.assert_array_equal(tree["metrics"]["loss"].values, [1.0, 2.0])
    np.testing.assert_array_equal(tree["checkpoints"]["checkpoint_step"].values, [0, 1])


def test_truncate_and_resume_state(tmp_path):
    model = MLP(6, 4, 1, 3)
    path = tmp_path / "r.zarr"
    rec = Recorder(path, model, _probe(dtype=torch.float32), ntk=False, layers=[])
    assert rec.load_state() is None
    for step in range(10):
        rec.log(step, loss=float(step))
        if step % 3 == 0:
            rec.checkpoint(step)
    assert rec.last_step == 9                          # the checkpoint of step 9 committed the rows up to 9
    rec.log(10, loss=10.0)
    assert rec.last_step == 9
    state = {"model": model.state_dict(), "next_step": 4, "rng": torch.get_rng_state(), "tags": ["a", {"b": 1.5}]}
    rec.save_state(state)
    assert rec.last_step == 10                         # save_state writes them: no gap when resuming from it
    np.testing.assert_array_equal(open_run(path)["metrics"]["loss"].values, np.arange(11.0))
    rec.truncate(4)
    assert rec.last_step == 4 and rec.checkpoint_steps == [0, 3]
    rec.log(5, loss=50.0)
    rec.truncate(-1)
    assert rec.last_step is None and rec.checkpoint_steps == []
    rec.log(0, loss=7.0)
    with pytest.raises(TypeError, match="state must be a dict"):
        rec.save_state([1])
    with pytest.raises(ValueError, match="-2"):
        rec.truncate(-2)
    rec.close("interrupted")
    loaded = rec.load_state()
    assert loaded["next_step"] == 4 and loaded["tags"] == ["a", {"b": 1.5}]
    torch.testing.assert_close(loaded["rng"], state["rng"])
    for k, v in state["model"].items():
        torch.testing.assert_close(loaded["model"][k], v)
    assert not list((path / "resume").glob("*.tmp"))
    tree = open_run(path)
    np.testing.assert_array_equal(tree["metrics"]["loss"].values, [7.0])
    assert tree.attrs["status"] == "interrupted"
    with pytest.raises(RuntimeError, match="closed"):
        rec.log(1, loss=1.0)


def test_context_manager_marks_failure_and_interrupt(tmp_path):
    model, probe = MLP(6, 4, 1, 3), _probe(dtype=torch.float32)
    with pytest.raises(ZeroDivisionError):
        with Recorder(tmp_path / "a.zarr", model, probe, ntk=False, layers=[]) as rec:
            rec.log(0, loss=1.0)
            1 / 0
    attrs = open_run(tmp_path / "a.zarr").attrs
    assert attrs["status"] == "failed" and "ZeroDivisionError: division by zero" in attrs["error"]
    assert open_run(tmp_path / "a.zarr")["metrics"].sizes["step"] == 1
    with pytest.raises(KeyboardInterrupt):
        with Recorder(tmp_path / "b.zarr", model, probe, ntk=False, layers=[]):
            raise KeyboardInterrupt
    assert open_run(tmp_path / "b.zarr").attrs["status"] == "interrupted"
    with Recorder(tmp_path / "a.zarr", model, probe, resume=True, ntk=False, layers=[]) as rec:
        with pytest.raises(ValueError, match="'running'"):
            rec.close("running")
    attrs = open_run(tmp_path / "a.zarr").attrs
    assert attrs["status"] == "complete" and "error" not in attrs


def test_lazy_exports_keep_import_light():
    import subprocess
    import sys
    code = "import sys, dynamics; print('zarr' in sys.modules, 'xarray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert dynamics.Recorder is Recorder and dynamics.open_run is open_run
    with pytest.raises(AttributeError, match="no_such_name"):
        dynamics.no_such_name  # noqa: B018


def test_layers_given_as_a_generator_are_read_once(tmp_path):
    model = MLP(6, 4, 1, 3)
    with Recorder(tmp_path / "r.zarr", model, _probe(dtype=torch.float32), ntk=False,
                  layers=(name for name in ["activations.0"])) as rec:
        assert rec.layers == ["activations.0"]
