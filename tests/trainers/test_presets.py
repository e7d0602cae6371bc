"""The shipped presets validate and follow the published protocol; paper-mnist5k trains one epoch."""

import copy
import json
from pathlib import Path

import pytest
import torch

import dynamics
from trainers import train
from trainers.config import load_config, preset_names
from trainers.optimizers import make_optimizer
from trainers.setup import build_model, prepare


def test_every_preset_validates():
    for name in preset_names():
        config = load_config(name)
        assert config.preset == name


@pytest.mark.parametrize("name,sgd_lr", [("paper-mnist", 0.1), ("paper-mnist5k", 0.1), ("paper-cifar", 0.01)])
def test_paper_presets_follow_the_published_protocol(name, sgd_lr):
    """docs/paper-protocol: batch 1024, 100 epochs, seeds 42/43/44, init std 1e-3, width 8000, float32,
    GN α 0.1 with the identity target and the paper's truncation, Adam 1e-4, SGD 0.1 (MNIST) / 0.01 (CIFAR)."""
    c = load_config(name)
    assert (c.train.batch_size, c.train.epochs, c.train.seeds) == (1024, 100, [42, 43, 44])
    assert (c.model.init_std, c.model.hidden, c.model.dtype, c.model.projection) == (1e-3, 8000, "float32", "hidden")
    assert c.model.depth == (6 if name == "paper-cifar" else 2)
    gn = c.optimizer("gn")
    assert (gn.lr, gn.ce_target, gn.truncation, gn.combine) == (0.1, "identity", "paper", "exact")
    assert c.optimizer("adam").lr == 1e-4 and c.optimizer("sgd").lr == sgd_lr
    assert c.train.loss == "ce" and c.train.optimizers == ["gn", "sgd", "adam"]


@pytest.mark.slow
def test_paper_mnist5k_trains_one_epoch(tmp_path):
    """One epoch (2 steps: 4000 training digits, 1024 held out, batch 1024) of GN on the real protocol."""
    config = load_config("paper-mnist5k", overrides={"train.epochs": 1})
    path = train(config, "gn", tmp_path / "gn.zarr", seed=42, progress=False)
    tree = dynamics.open_run(path)
    assert tree.attrs["status"] == "complete"
    stored = json.loads(tree.attrs["config"])
    assert stored["schedule"]["steps_per_epoch"] == 2 and stored["model"]["init_std"] == 1e-3
    metrics = tree["metrics"].to_dataset().load()
    assert metrics.sizes["step"] == 2
    assert (metrics["loss_after"] < metrics["loss"]).all()


def test_default_preset_is_the_protocol_study_choice():
    """mnist1d follows docs/protocol-study.md: the paper's init std and projection scale, float32, the
    identity CE target with the averaged update and the exact solver, batch 64 (61 steps per epoch; the
    paper has 58), three seeds, the learning rates the study picked (part 3: the paper's rule, stable
    over the default run's epochs)."""
    c = load_config()
    assert c.preset == "mnist1d" and c.data.name == "mnist1d"
    assert (c.model.kind, c.model.hidden, c.model.depth, c.model.first_linear) == ("revmlp", 512, 2, True)
    assert (c.model.init_std, c.model.projection, c.model.dtype) == (1e-3, "hidden", "float32")
    assert (c.train.batch_size, c.train.seeds, c.train.loss) == (64, [0, 1, 2], "ce")
    gn = c.optimizer("gn")
    assert (gn.ce_target, gn.combine, gn.truncation) == ("identity", "exact", "exact")
    study = (Path(__file__).resolve().parents[2] / "docs" / "protocol-study.md").read_text(encoding="utf-8")
    stable = study[study.index("## 3."):]
    picked = {name: float(next(line for line in stable.splitlines() if line.startswith(f"| {name} |"))
                          .split("**")[1]) for name in ("gn", "sgd", "adam")}
    assert picked == {name: c.optimizer(name).lr for name in ("gn", "sgd", "adam")}
    assert f"over the default run's {c.train.epochs} epochs" in stable


def test_default_preset_gn_step_is_exact_in_float32():
    """ρ = ‖J δθ + α ε‖ / ‖α ε‖ of the float32 update actually applied, recomputed in float64 with an
    independent forward-mode Jacobian-vector product (torch.func.jvp) and the textbook identity target
    ε = softmax(z) − onehot(y), over the first steps of the default preset. Float32 tolerance: 1e-4."""
    config = load_config()
    experiment = prepare(config)
    model = build_model(config.model, experiment.x.shape[1], experiment.n_classes, 0)
    stepper = make_optimizer("gn", config.optimizer("gn"), model, config.train.loss)
    alpha, b = config.optimizer("gn").lr, experiment.batch_size
    order = torch.randperm(len(experiment.pool), generator=torch.Generator().manual_seed(0))
    for k in range(4):
        batch = experiment.pool[order[k * b:(k + 1) * b]]
        x, y = experiment.x[batch], experiment.y[batch]
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        report = stepper.step(x, y)
        delta = {name: (p.detach() - before[name]).double() for name, p in model.named_parameters()}
        twin = copy.deepcopy(model).double()
        buffers = {name: t for name, t in twin.named_buffers()}
        start = {name: t.double() for name, t in before.items()}

        def outputs(params):
            return torch.func.functional_call(twin, {**params, **buffers}, (x.double(),))

        logits, change = torch.func.jvp(outputs, (start,), (delta,))
        target = -alpha * (torch.softmax(logits, dim=1) - torch.nn.functional.one_hot(y, 10).double())
        rho = float((change - target).norm() / target.norm())
        assert rho <= 1e-4, (k, rho, report.residual)
        assert report.residual <= 1e-4


def test_prepare_with_shared_data_equals_prepare_alone():
    """A data set loaded once (load_data) gives the same Experiment as loading it inside prepare, for
    several batch sizes of the same [data]; a data set of another [data] name is refused."""
    from trainers.setup import load_data

    data = load_data(load_config("digits").data)
    for batch in (32, 100, 256):
        config = load_config("digits", overrides={"train.batch_size": batch, "train.epochs": 1})
        shared, alone = prepare(config, data), prepare(config)
        for field in ("x", "y", "pool", "other", "probe"):
            assert torch.equal(getattr(shared, field), getattr(alone, field))
        assert shared.checkpoint_steps == alone.checkpoint_steps
    with pytest.raises(ValueError, match="mnist1d"):
        prepare(load_config(), data)
