"""The memory lower bound counts exactly the elements of the models it describes."""

import pytest
import torch

from dynamics.errors import ConfigError
from dynamics.models import MLP, RevMLP
from trainers.budget import GIB, check_memory, model_elements, needed_bytes
from trainers.config import load_config


@pytest.mark.parametrize("kind, dim, hidden, depth, classes", [
    ("revmlp", 4, 3, 1, 2), ("revmlp", 40, 17, 3, 10), ("revmlp", 64, 8, 2, 10),
    ("mlp", 5, 3, 1, 2), ("mlp", 40, 17, 3, 10), ("mlp", 7, 9, 4, 3)])
def test_model_elements_equal_the_built_model(kind, dim, hidden, depth, classes):
    model = (RevMLP(dim, hidden, depth, classes) if kind == "revmlp" else MLP(dim, hidden, depth, classes))
    trained = sum(p.numel() for p in model.parameters())
    total = trained + sum(b.numel() for b in model.buffers())
    assert model_elements(kind, dim, hidden, depth, classes) == (total, trained)


def test_needed_bytes_is_the_documented_sum():
    config = load_config("digits", overrides={"model.hidden": 10, "model.depth": 2, "train.batch_size": 5,
                                              "model.dtype": "float32"})
    total, trained = model_elements("revmlp", 64, 10, 2, 10)
    assert needed_bytes(config, "adam", 64, 10) == 4 * (4 * total + 5 * 10 * 2)
    assert needed_bytes(config, "kgn", 64, 10) == 4 * (4 * total + 5 * 10 * 2 + 5 * 10 * trained)
    twin = config.with_overrides({"train.linearized": True})   # the twin: 3 more copies, kgn a second Jacobian
    assert needed_bytes(twin, "adam", 64, 10) == 4 * (7 * total + 5 * 10 * 2)
    assert needed_bytes(twin, "kgn", 64, 10) == 4 * (7 * total + 5 * 10 * 2 + 2 * 5 * 10 * trained)


def test_check_memory_refuses_with_the_estimate():
    config = load_config("digits", overrides={"model.hidden": 10**9})
    needed = needed_bytes(config, "adam", 64, 10)
    assert needed > 2**40
    with pytest.raises(ConfigError, match=r"config needs at least [\d.e+]+ GiB .*'adam'.*model\.hidden = 1000000000"
                                          r".*but 1 GiB are available"):
        check_memory(config, "adam", "adam", 64, 10, available=GIB)
    check_memory(load_config("digits"), "adam", "adam", 64, 10, available=GIB)  # 1 GiB is plenty for digits
    torch.manual_seed(0)
