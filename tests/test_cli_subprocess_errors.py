"""Issue 15 §3 user errors through the real entry point (``python -m dynamics.cli`` in a subprocess):
one line on stderr, exit status 2, no traceback, nothing written. The in-process twins of these cases
(tests/test_cli_config_errors.py, tests/trainers/test_data_validation.py, ...) check the messages in
detail; these check that nothing between the shell and ``main`` turns them into tracebacks."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli_config_errors import TINY   # the same tiny config as the in-process twins

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
NPZ = """name = "npz"
[data]
name = "npz"
probe_size = 12
[model]
kind = "mlp"
hidden = 8
[train]
optimizers = ["adam"]
steps = 2
batch_size = 16
checkpoints = 2
ntk = false
"""


def npz(folder, **arrays):
    path = folder / "data.npz"
    np.savez(path, **arrays)
    return path


def features(n=200, d=6):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)), rng.integers(0, 3, n)


def case_files(folder: Path, case: str) -> list[str]:
    """The argv of ``case`` (files it needs written under ``folder``)."""
    config = folder / "c.toml"
    config.write_text(TINY)
    train = ["train", "--optimizer", "adam", "--quiet", "--out", str(folder / "out.zarr")]
    table = {"betas-empty": "[optimizers.adam]\nbetas = []\n", "betas-one": "[optimizers.adam]\nbetas = [0.9]\n",
             "lbfgs": '[optimizers.adam]\nkind = "LBFGS"\n', "sparseadam": '[optimizers.adam]\nkind = "SparseAdam"\n',
             "differentiable": "[optimizers.adam]\ndifferentiable = true\n"}
    if case in table:
        config.write_text(TINY + table[case])
        return [*train, "--config", str(config)]
    if case in ("analyze-empty", "analyze-foreign", "report-foreign"):
        target = folder / "target"
        target.mkdir()
        if case != "analyze-empty":
            (target / "notes.txt").write_text("not a run")
        return [case.split("-")[0], str(target)]
    if case == "not-utf8":
        config.write_bytes(b'name = "caf\xe9"\n')
        return [*train, "--config", str(config)]
    if case in ("hidden", "depth"):
        key = {"hidden": "model.hidden=1000000000", "depth": "model.depth=1000000"}[case]
        return [*train, "--config", str(config), "--set", key]
    if case == "seed":
        return [*train, "--config", str(config), "--seed", str(2**64 + 1)]
    if case == "out-file":
        (folder / "notes.txt").write_text("keep")
        return ["train", "--optimizer", "adam", "--quiet", "--config", str(config), "--out", str(folder / "notes.txt")]
    if case == "sweep-set":
        (folder / "s.toml").write_text(TINY + '[sweep]\n"optimizers.adam.lr" = [0.001]\n')
        return ["sweep", str(folder / "s.toml"), "--set", "train.stepz=1", "--out", str(folder / "sw"), "--quiet"]
    if case == "run-set":
        return ["run", "--config", str(config), "--set", "train.steps=many", "--out", str(folder / "r"), "--quiet"]
    if case == "data-dir-bundled":
        return [*train, "--config", str(config), "--data-dir", str(folder)]
    (folder / "n.toml").write_text(NPZ)
    x, y = features()
    data = {"npz-truncated": lambda: None, "npy": lambda: None,
            "uint64-labels": lambda: npz(folder, x=x, y=np.full(200, 2**63, dtype=np.uint64)),
            "labels-beyond": lambda: npz(folder, x=x, y=np.where(y == 0, 10**6, y)),
            "zero-features": lambda: npz(folder, x=np.zeros((200, 0)), y=y),
            "complex-features": lambda: npz(folder, x=x + 1j * x, y=y)}
    if case == "npz-truncated":
        whole = npz(folder, x=x, y=y).read_bytes()
        path = folder / "cut.npz"
        path.write_bytes(whole[: len(whole) // 2])
    elif case == "npy":
        path = folder / "x.npy"
        np.save(path, x)
    else:
        path = data[case]()
    return [*train, "--config", str(folder / "n.toml"), "--data-dir", str(path)]


CASES = ["analyze-empty", "analyze-foreign", "report-foreign", "betas-empty", "betas-one", "lbfgs", "sparseadam",
         "differentiable", "not-utf8", "hidden", "depth", "seed", "out-file", "sweep-set", "run-set",
         "data-dir-bundled", "npz-truncated", "npy", "uint64-labels", "labels-beyond", "zero-features",
         "complex-features"]
FAST = {"betas-one", "npz-truncated", "analyze-foreign"}   # the rest only with -m slow (a subprocess each)


@pytest.mark.parametrize("case", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_user_error_through_the_entry_point(tmp_path, case):
    argv = case_files(tmp_path, case)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = subprocess.run([sys.executable, "-m", "dynamics.cli", *argv], capture_output=True, text=True,
                            env=ENV, cwd=tmp_path, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert lines[0].startswith("dynamics"), lines
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before, "a refused command wrote files"
