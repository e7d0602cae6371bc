"""The README is a landing page: at most 200 lines, its example runs as written and records the
initialisation as checkpoint 0, its links lead to pages that exist, and the examples it names run."""

import contextlib
import io
import re
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from docs_blocks import ROOT, blocks, run_python_blocks

README = ROOT / "README.md"
MAX_LINES = 200


def test_readme_is_a_landing_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES, f"README.md has {len(text.splitlines())} lines (at most {MAX_LINES})"
    assert "docs/report-screenshot.png" in text and (ROOT / "docs" / "report-screenshot.png").is_file()
    assert "make test" in text and "make run" in text
    # the findings table sits between the markers that the results script regenerates
    table = re.search(r"<!-- results:mnist1d:begin -->\n(.*?)<!-- results:mnist1d:end -->", text, flags=re.S)
    assert table and table.group(1).count("\n| `") == 6, "the six claims between the results:mnist1d markers"


def test_readme_links_lead_to_files():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "the README links to no page"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    assert sum(b.lang == "python" for b in blocks(README)) == 3, "the README's examples: own loop, Lightning, HF"
    with contextlib.redirect_stdout(io.StringIO()):
        namespace = run_python_blocks(README, folder)
    return folder, namespace


def test_readme_example_checkpoints_the_initialisation(readme_run):
    import torch

    from dynamics.models import RevMLP

    folder, namespace = readme_run
    assert len(namespace["x"]) == 1797 and namespace["step"] == 60
    initial = RevMLP(64, 512, 2, 10, dtype=torch.float64, seed=0)
    params = xr.open_zarr(folder / "runs" / "mine.zarr", group="params")
    assert int(params["checkpoint_step"].values[0]) == 0
    for name, value in initial.named_parameters():
        stored = params[name.replace(".", "__")].isel(checkpoint=0).values
        np.testing.assert_array_equal(stored, value.detach().numpy())
    metrics = xr.open_zarr(folder / "runs" / "mine.zarr", group="metrics")
    assert metrics["step"].values.tolist() == list(range(1, 61))
    assert float(metrics["gn_residual"].max()) < 1e-10          # exact GN in float64, as the comment says


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


def test_readme_trainer_examples_record_complete_stores(readme_run):
    """The Lightning and Hugging Face blocks leave complete stores: one epoch of 15 steps (1797 digits,
    batch 128) and 8 Trainer steps, each with checkpoint 0 = the model before its first update."""
    folder, _ = readme_run
    for name, steps in (("lightning.zarr", 15), ("bert.zarr", 8)):
        tree = xr.open_datatree(folder / "runs" / name, engine="zarr")
        assert tree.attrs["status"] == "complete", name
        assert int(tree["metrics"]["step"].values[-1]) == steps, name
        assert int(tree["checkpoints"]["checkpoint_step"].values[0]) == 0, name
