"""Tiny real training (exact GN and SGD on a RevMLP, recorded with dynamics.Recorder) -> analysis -> report."""

import pytest
import torch
from htmlcheck import parse

import reports
from dynamics import Recorder
from dynamics.gauss_newton import ReversibleGN
from dynamics.models import RevMLP
from dynamics.schedules import every
from reports.catalog import FIGURES


def _train(path, optimizer, steps=12, batch=8):
    gen = torch.Generator().manual_seed(7)
    labels = torch.arange(96) % 3
    x = torch.randn(3, 8, generator=gen, dtype=torch.float64)[labels] + 0.7 * torch.randn(96, 8, generator=gen,
                                                                                           dtype=torch.float64)
    model = RevMLP(8, 16, 2, 3, seed=0, dtype=torch.float64)
    ce = torch.nn.CrossEntropyLoss()
    gn = ReversibleGN(model, lr=0.5) if optimizer == "gn" else None
    sgd = torch.optim.SGD(model.parameters(), lr=0.2) if optimizer == "sgd" else None
    other = (x[80:88], labels[80:88])
    config = {"optimizer": {"name": optimizer}, "model": {"name": "revmlp", "dim": 8, "hidden": 16, "depth": 2}}

    def evaluate():
        with torch.no_grad():
            train, test = model(x[:64]), model(x[64:])
        return dict(train_loss=float(ce(train, labels[:64])), test_loss=float(ce(test, labels[64:])),
                    train_acc=float((train.argmax(1) == labels[:64]).double().mean()),
                    test_acc=float((test.argmax(1) == labels[64:]).double().mean()))

    with Recorder(path, model, probe=(x[64:88], labels[64:88]), config=config, schedule=every(4)) as rec:
        for step in range(steps):
            if step % 4 == 0:
                rec.checkpoint(step, **evaluate())
            xb, yb = x[(step * batch) % 64:][:batch], labels[(step * batch) % 64:][:batch]
            with torch.no_grad():
                other_before = float(ce(model(other[0]), other[1]))
            if gn is not None:
                report = gn.step(xb, yb)
                loss, residual = report.loss, report.residual
            else:
                out = ce(model(xb), yb)
                sgd.zero_grad()
                out.backward()
                sgd.step()
                loss, residual = float(out), float("nan")
            with torch.no_grad():
                after, other_after = float(ce(model(xb), yb)), float(ce(model(other[0]), other[1]))
            rec.log(step, loss=loss, loss_after=after, other_loss=other_before, other_loss_after=other_after,
                    gn_residual=residual)
        rec.checkpoint(steps, **evaluate())


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e") / "tiny"
    root.mkdir()
    for optimizer in ("gn", "sgd"):
        _train(root / f"{optimizer}.zarr", optimizer)
    return root


def test_recorded_runs_to_report(experiment):
    out = reports.write_report(experiment)  # no analysis.zarr yet: runs analysis.analyze_experiment
    assert (experiment / "analysis.zarr").is_dir()
    page = out.read_text(encoding="utf-8")
    doc = parse(page)
    assert doc.errors == []
    not_shown = page.split("<h2>Not shown</h2>")[-1]
    assert len(doc.images) == len(FIGURES) - 2, not_shown[:2000]   # train.linearized and train.sharpness are off
    assert "linearized_distance_test" in not_shown and "&#x27;sharpness&#x27;" in not_shown
    text = doc.all_text("main")
    assert "GN's updates reduce the loss of the batch they were computed on" in text
    assert "GN's steps move the linearised outputs onto their target" in text
    assert "optimizer.name" in text and "gn: gn · sgd: sgd" in text  # config from the stores' root attrs
    assert "complete" in doc.all_text("table")
    stamp = (experiment / "analysis.zarr" / "zarr.json").stat().st_mtime_ns
    reports.write_report(experiment)  # fresh analysis.zarr is reused, not rewritten
    assert (experiment / "analysis.zarr" / "zarr.json").stat().st_mtime_ns == stamp
