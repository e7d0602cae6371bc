"""The README's Python snippets and the examples run as written, and follow the documented order:
checkpoint 0 holds the parameters before the first update."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture(scope="module")
def snippet_dirs(tmp_path_factory) -> list[tuple[str, Path]]:
    """Every Python block of the README executed once, each in a fresh working directory."""
    import os

    runs = []
    for index, block in enumerate(python_blocks()):
        folder = tmp_path_factory.mktemp(f"readme{index}")
        here = os.getcwd()
        os.chdir(folder)
        try:
            exec(compile(block, f"README.md python block {index}", "exec"), {"__name__": "readme_snippet"})
        finally:
            os.chdir(here)
        runs.append((block, folder))
    return runs


def test_readme_snippets_run_as_written(snippet_dirs):
    assert snippet_dirs, "the README has no python snippet"


def test_readme_loop_checkpoints_the_initialisation(snippet_dirs):
    import torch

    from dynamics.models import RevMLP

    folder = next(f for block, f in snippet_dirs if "Recorder(" in block and "gn.step" in block)
    initial = RevMLP(64, 512, 2, 10, dtype=torch.float64, seed=0)
    params = xr.open_zarr(folder / "runs" / "mine.zarr", group="params")
    assert int(params["checkpoint_step"].values[0]) == 0
    for name, value in initial.named_parameters():
        stored = params[name.replace(".", "__")].isel(checkpoint=0).values
        np.testing.assert_array_equal(stored, value.detach().numpy())


@pytest.mark.parametrize("example, steps", [("gn_own_loop.py", 12), ("custom_loop.py", 30)])
def test_examples_run_and_checkpoint_the_initialisation(example, steps, tmp_path):
    out = tmp_path / "run.zarr"
    result = subprocess.run([sys.executable, str(ROOT / "examples" / example), "--out", str(out), "--steps", str(steps)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    checkpoints = xr.open_zarr(out, group="checkpoints")
    steps_stored = checkpoints["checkpoint_step"].values
    assert steps_stored[0] == 0 and steps_stored[-1] == steps
    metrics = xr.open_zarr(out, group="metrics")
    assert metrics["step"].values[0] == 1 and metrics["step"].values[-1] == steps
