"""The structured NTK of convolutional nets (nn.Conv2d via unfold) against a dense jacrev contraction.

Reference: :func:`test_ntk.dense_ntk`, Θ = J(x1) J(x2)ᵀ from explicit P-wide Jacobians. Tolerances:
float64 rtol 1e-10 (round-off); float32 rtol 2e-4, atol 1e-5·max|Θ| against the float64 reference.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from test_ntk import F64, dense_ntk, traced

from dynamics.ntk import empirical_ntk, structured_problem


def cnn(cin=1, c1=3, c2=4, kernel=3, stride=1, padding=1, dilation=1, bias=True, inplace=False, o=3, size=7,
        seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    conv1 = nn.Conv2d(cin, c1, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias, dtype=dtype)
    conv2 = nn.Conv2d(c1, c2, 2, stride=1, padding=0, bias=bias, dtype=dtype)
    with torch.no_grad():
        width = conv2(conv1(torch.zeros(1, cin, size, size, dtype=dtype))).numel()
    return nn.Sequential(conv1, nn.ReLU(inplace=inplace), conv2, nn.Tanh(), nn.Flatten(),
                         nn.Linear(width, o, dtype=dtype))


GRID = [dict(), dict(stride=2), dict(padding=0, kernel=2), dict(dilation=2, padding=2), dict(bias=False),
        dict(cin=2, kernel=(3, 2), padding=(1, 0)), dict(inplace=True), dict(o=1, size=5)]


@pytest.mark.parametrize("spec", GRID, ids=[str(s) for s in GRID])
def test_conv_structured_matches_dense_jacobians(spec):
    model = cnn(**spec)
    size = spec.get("size", 7)
    cin = spec.get("cin", 1)
    g = torch.Generator().manual_seed(len(str(spec)))
    x1 = torch.randn(5, cin, size, size, generator=g, dtype=torch.float64)
    x2 = torch.randn(4, cin, size, size, generator=g, dtype=torch.float64)
    assert structured_problem(model, x1) is None  # "auto" takes the structured path
    full = dense_ntk(model, x1, x2)
    torch.testing.assert_close(empirical_ntk(model, x1, x2, method="structured", trace=False), full, **F64)
    torch.testing.assert_close(empirical_ntk(model, x1, x2, method="structured"), traced(full), **F64)
    sym = dense_ntk(model, x1)
    for chunk in (None, 2):
        got = empirical_ntk(model, x1, method="structured", chunk_size=chunk)
        torch.testing.assert_close(got, traced(sym), **F64)
        torch.testing.assert_close(got, got.T, rtol=0, atol=0)


def test_frozen_conv_weight_keeps_its_bias():
    model = cnn()
    model[0].weight.requires_grad_(False)
    x = torch.randn(4, 1, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert structured_problem(model, x) is None
    torch.testing.assert_close(empirical_ntk(model, x, method="structured", trace=False), dense_ntk(model, x), **F64)


def test_conv_float32_against_the_float64_reference():
    model = cnn(c1=8, c2=8)
    x = torch.randn(6, 1, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    want = traced(dense_ntk(model, x))
    got = empirical_ntk(copy.deepcopy(model).float(), x.float(), method="structured").double()
    torch.testing.assert_close(got, want, rtol=2e-4, atol=1e-5 * want.abs().max().item())


class ConvTwice(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(2, 2, 3, padding=1, dtype=torch.float64)
        self.out = nn.Linear(2 * 25, 2, dtype=torch.float64)

    def forward(self, x):
        return self.out(torch.relu(self.conv(torch.relu(self.conv(x)))).flatten(1))


class ConvBatchMix(nn.Module):
    """A conv whose output is centred over the batch: each sample's output depends on the others'
    parameter gradients, so per-sample Jacobians miss terms."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.conv = nn.Conv2d(1, 2, 3, dtype=torch.float64)
        self.out = nn.Linear(2 * 9, 2, dtype=torch.float64)

    def forward(self, x):
        z = self.conv(x)
        return self.out(torch.tanh(z - z.mean(0, keepdim=True)).flatten(1))


@pytest.mark.parametrize("model, shape, reason", [
    (ConvTwice(), (2, 5, 5), "runs 2 times"),
    (nn.Sequential(nn.Conv2d(2, 4, 3, groups=2, dtype=torch.float64), nn.Flatten(),
                   nn.Linear(4 * 9, 2, dtype=torch.float64)), (2, 5, 5), "not a plain"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect", dtype=torch.float64), nn.Flatten(),
                   nn.Linear(2 * 25, 2, dtype=torch.float64)), (1, 5, 5), "not a plain"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, padding="same", dtype=torch.float64), nn.Flatten(),
                   nn.Linear(2 * 25, 2, dtype=torch.float64)), (1, 5, 5), "not a plain"),
])
def test_unsupported_convs_fall_back_or_raise(model, shape, reason):
    x = torch.randn((4,) + shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    assert reason in structured_problem(model, x)
    with pytest.raises(ValueError, match=reason):
        empirical_ntk(model, x, method="structured")
    torch.testing.assert_close(empirical_ntk(model, x), traced(dense_ntk(model, x)), **F64)


def test_samples_mixing_before_a_conv_are_caught_on_the_chunk_that_shows_it():
    model = ConvBatchMix()
    x = torch.randn(6, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    assert "samples influence each other" in structured_problem(model, x)
    with pytest.raises(ValueError, match="samples influence each other"):
        empirical_ntk(model, x, method="structured")
