"""Names a user gives (parameters, layers, metrics) as store keys, end to end through a Recorder: stored
under the reversible key with the name as attribute (read back with plain xarray), or refused when the
Recorder is created (metrics: at the call that first uses them); a variable that cannot be created
never holds up the others; a resume whose parameters differ is refused naming the difference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from dynamics import Recorder, open_run
from dynamics.errors import StoreError
from dynamics.store import RunWriter
from dynamics.store.names import decode, original


class _Named(nn.Module):
    """Linear(4 → 5) → tanh → Linear(5 → 2), the first one under the ModuleDict key ``first``."""

    def __init__(self, first: str = "enc/0", second: str = "out", seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.first, self.second = first, second
        self.d = nn.ModuleDict({first: nn.Linear(4, 5), second: nn.Linear(5, 2)})
        self.act = nn.Tanh()

    def forward(self, x):
        return self.d[self.second](self.act(self.d[self.first](x)))


def _probe():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=gen), torch.randint(0, 2, (6,), generator=gen)


def _dense_ntk(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(model, p, (x,)))(params)
    dense = torch.cat([j.reshape(x.shape[0], 2, -1) for j in jac.values()], dim=-1)
    return torch.einsum("nop,mop->nm", dense, dense).numpy()


@pytest.mark.parametrize("first", ["enc/0", "enc.λ/0".replace(".", "_"), "a b:c*?", "enc-0"])
def test_the_issue_example_and_other_awkward_module_names_are_stored_under_their_keys(tmp_path, first):
    """The issue: ModuleDict key "enc/0" lost the whole run at close(). Now each name is stored under its
    key with the name as attribute; 3 rows and 3 checkpoints, values equal to the model's own (NTK
    against a dense Jacobian), read back with plain xarray."""
    model, (x, y) = _Named(first), _probe()
    path = tmp_path / "r.zarr"
    layers = [f"d.{first}", "act"]
    saved, kernels = [], []
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with Recorder(path, model, (x, y), layers=layers, flush_every=2) as rec:
        for step in range(3):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            rec.log(step, **{"train/loss": loss.item()})
            assert rec.checkpoint(step)
            saved.append({k: v.detach().clone() for k, v in model.named_parameters()})
            kernels.append(_dense_ntk(model, x))
            opt.zero_grad()
            loss.backward()
            opt.step()
    run = xr.open_datatree(path, engine="zarr")
    assert run.attrs["status"] == "complete"
    metrics, checkpoints, params = run["metrics"], run["checkpoints"], run["params"]
    assert metrics.sizes["step"] == 3 and checkpoints.sizes["checkpoint"] == 3
    assert metrics["train-2floss"].attrs["name"] == "train/loss"
    names = {params[key].attrs["name"]: key for key in params.data_vars}
    assert set(names) == set(saved[0])
    for name, key in names.items():
        assert decode(key) == name == original(key, params[key].attrs)
        for step in range(3):
            np.testing.assert_array_equal(params[key].values[step], saved[step][name].numpy())
    for layer in layers:
        key = "rep_" + layer.replace(".", "__") if layer == "act" else [v for v in checkpoints.data_vars
                                                                         if checkpoints[v].attrs.get("name") == layer][0]
        assert checkpoints[key].attrs["name"] == layer and checkpoints[key].shape[:2] == (3, 6)
    for step in range(3):
        np.testing.assert_allclose(checkpoints["ntk"].values[step], kernels[step], rtol=1e-5, atol=1e-6)


def test_parameter_and_layer_names_that_cannot_be_keys_are_refused_when_the_recorder_is_created(tmp_path):
    x, y = _probe()
    cases = [
        (_Named("W", "w"), r"'d.w.weight' would be stored as params/d__w__weight, which differs only in letter "
                           r"case from params/d__W__weight"),
        (_Named("x" * 200), "at most 200 are allowed"),
    ]
    for model, text in cases:
        with pytest.raises(ValueError, match=text):
            Recorder(tmp_path / "r.zarr", model, (x, y), layers=[])
        assert not (tmp_path / "r.zarr").exists()
    model = _Named()
    model.register_parameter("checkpoint_step", nn.Parameter(torch.zeros(1)))
    with pytest.raises(ValueError, match="'checkpoint_step' would be stored as params/checkpoint_step, which is "
                                         "taken by the group itself"):
        Recorder(tmp_path / "r.zarr", model, (x, y), layers=[])
    assert not (tmp_path / "r.zarr").exists()


def test_scalar_names_are_encoded_or_refused_at_the_call_that_first_uses_them(tmp_path):
    model, (x, y) = _Named(), _probe()
    path = tmp_path / "r.zarr"
    with Recorder(path, model, (x, y), ntk=False, layers=["act"]) as rec:
        rec.log(0, **{"val/loss": 1.0, "λ": 2.0, "loss": 3.0})
        with pytest.raises(ValueError, match=r"'Loss' would be stored as metrics/Loss, which differs only in letter "
                                             r"case from metrics/loss \(taken by 'loss'\)"):
            rec.log(1, Loss=1.0)
        with pytest.raises(ValueError, match="'unit_act' would be stored as checkpoints/unit_act, which is taken "
                                             "by 'act'"):
            rec.checkpoint(1, unit_act=1.0)                # the dimension of the layer act
        with pytest.raises(ValueError, match="'probe_' would be stored as checkpoints/probe_"):
            rec.checkpoint(1, probe_=1.0)                  # the NTK's second dimension
        rec.log(1, loss=4.0)                               # the refused calls used up nothing
        assert rec.checkpoint(1, **{"test acc": 0.5})
    tree = open_run(path)
    m = tree["metrics"].to_dataset()
    assert {m[v].attrs.get("name") for v in m.data_vars} == {"val/loss", "λ", "loss"}
    np.testing.assert_array_equal(m["val-2floss"].values, [1.0, np.nan])
    np.testing.assert_array_equal(m["loss"].values, [3.0, 4.0])
    assert tree["checkpoints"]["test-20acc"].attrs["name"] == "test acc"


def test_a_variable_that_cannot_be_created_holds_up_no_other(tmp_path):
    """A file in the way of new variables' folders (a real file-system failure of those variables only):
    the rows and checkpoints of every other variable are committed; the next call raises StoreError
    naming the variable and the step; the store ends "failed"."""
    model, (x, y) = _Named(), _probe()
    path = tmp_path / "r.zarr"
    rec = Recorder(path, model, (x, y), ntk=False, layers=[], flush_every=1)
    rec.log(0, loss=1.0)
    assert rec.checkpoint(0, acc=0.5)
    rec.flush()
    (path / "metrics" / "late").write_text("in the way")        # where the folder of metric "late" goes
    (path / "checkpoints" / "extra").write_text("in the way")
    rec.log(1, loss=2.0, late=1.0)                             # written in the background
    with pytest.raises(StoreError, match=r"metrics/late could not be created .*metrics rows of steps 1\.\.1 was "
                                         r"committed without it"):
        rec.log(2, loss=3.0)
    assert rec.checkpoint(2, acc=0.7, extra=1.0)
    with pytest.raises(StoreError, match=r"checkpoints/extra could not be created .*the checkpoint at step 2"):
        rec.flush()
    rec.log(3, loss=4.0)
    assert rec.checkpoint(3, acc=0.9)
    rec.close()
    tree = open_run(path)
    assert tree.attrs["status"] == "failed"
    assert "metrics/late" in tree.attrs["error"] and "checkpoints/extra" in tree.attrs["error"]
    np.testing.assert_array_equal(tree["metrics"]["loss"].values, [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(tree["checkpoints"]["acc"].values, [0.5, 0.7, 0.9])
    assert "late" not in tree["metrics"] and "extra" not in tree["checkpoints"]
    assert (path / "metrics" / "late").read_text() == "in the way"          # nothing of the user's removed


# ------------------------------------------------------------------ resume with another parameter set
class _Wrapper(nn.Module):
    """What torch.compile's OptimizedModule looks like to named_parameters: the model under ``_orig_mod``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self._orig_mod = inner

    def forward(self, x):
        return self._orig_mod(x)


def _record(path, model, **options) -> None:
    x, y = _probe()
    with Recorder(path, model, (x, y), ntk=False, layers=[], **options) as rec:
        rec.log(0, loss=1.0)
        rec.checkpoint(0)


def _frozen(model: nn.Module) -> nn.Module:
    model.d["out"].bias.requires_grad_(False)
    return model


def _reshaped(model: nn.Module) -> nn.Module:
    model.d["out"] = nn.Linear(5, 3)
    return model


CHANGES = [   # (how the model changes, what the refusal says)
    (lambda m: _Wrapper(m), r"missing from the model: d\.enc/0\.weight.*; new in the model: _orig_mod\.d\.enc/0\.weight"
                            r".*the model's names are the others with the prefix '_orig_mod\.'"),
    (lambda m: _Named("enc/1"), r"missing from the model: d\.enc/0\.weight, d\.enc/0\.bias; new in the model: "
                                r"d\.enc/1\.weight, d\.enc/1\.bias\)"),
    (_frozen, r"missing from the model: d\.out\.bias\)"),
    (_reshaped, r"shape changed: d\.out\.weight \(2, 5\) -> \(3, 5\), d\.out\.bias \(2,\) -> \(3,\)"),
]


@pytest.mark.parametrize("params", ["all", "none"])
def test_a_resume_with_another_parameter_set_is_refused_naming_the_difference(tmp_path, params):
    """Renamed, wrapped (the names torch.compile gives), frozen and reshaped parameters — also in a store
    that keeps no parameter values (params="none"): refused, the store left as it was and unlocked."""
    path = tmp_path / "r.zarr"
    _record(path, _Named(), params=params)
    before = open_run(path).load()
    x, y = _probe()
    for change, text in CHANGES:
        with pytest.raises(StoreError, match="the model's trained parameters differ from the ones the store was "
                                             "recorded with.*" + text):
            Recorder(path, change(_Named()), (x, y), ntk=False, layers=[], resume=True)
        assert not (path / ".lock").exists()
    xr.testing.assert_identical(open_run(path).load(), before)
    with Recorder(path, _Named(), (x, y), ntk=False, layers=[], resume=True) as rec:   # the same model: fine
        rec.log(1, loss=2.0)
        rec.checkpoint(1)
    assert open_run(path)["checkpoints"].sizes["checkpoint"] == 2


def test_a_store_written_before_the_names_rule_is_resumed_under_its_own_keys(tmp_path):
    """A store as the Recorder wrote it before (keys "." → "__", no name attributes, no parameter list):
    a resume keeps appending to its variables, checks the parameter set against them and lists it."""
    model, (x, y) = _Named("enc-0"), _probe()
    path = tmp_path / "old.zarr"
    writer = RunWriter.create(path, config=None, probe_x=x.numpy(), probe_y=y.numpy(), attrs={"params": "all"})
    old = {name.replace(".", "__"): p.detach().numpy() for name, p in model.named_parameters()}
    writer.append_checkpoint(0, np.nan, {}, {}, {k: (tuple(f"{k}_dim{i}" for i in range(v.ndim)), v)
                                                 for k, v in old.items()})
    writer.close("complete")
    with pytest.raises(StoreError, match=r"new in the model: d\.extra\.weight\)"):
        bigger = _Named("enc-0")
        bigger.d["extra"] = nn.Linear(1, 1, bias=False)
        Recorder(path, bigger, (x, y), ntk=False, layers=[], resume=True)
    with Recorder(path, model, (x, y), ntk=False, layers=[], resume=True) as rec:
        rec.checkpoint(1)
    tree = open_run(path)
    assert sorted(tree["params"].data_vars) == sorted(old)                  # "d__enc-0__weight", not doubled
    assert tree["params"]["d__enc-0__weight"].shape == (2, 5, 4)
    listed = json.loads(tree.attrs["parameters"])
    assert [row[:2] for row in listed] == [[n, n.replace(".", "__")] for n, _ in model.named_parameters()]
