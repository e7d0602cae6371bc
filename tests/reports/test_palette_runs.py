"""Colours per optimiser and reading runs out of the analysis Dataset."""

import re
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest

from reports import palette
from reports.palette import KNOWN_OPTIMIZER_COLORS, OKABE_ITO, optimizer_color, seed_linestyle
from reports.runs import as_combined, checkpoint_series, checkpoint_steps, run_infos, step_series


def test_known_optimizers_have_fixed_distinct_okabe_ito_colours():
    assert optimizer_color("gn") == "#D55E00" and optimizer_color("adam") == "#009E73"
    assert optimizer_color(" GN ") == optimizer_color("gn")
    assert len(set(KNOWN_OPTIMIZER_COLORS.values())) == len(KNOWN_OPTIMIZER_COLORS)
    assert set(KNOWN_OPTIMIZER_COLORS.values()) <= set(OKABE_ITO.values())


def test_other_names_get_a_palette_colour_stable_across_processes():
    names = ["lion", "shampoo", "adagrad", "rmsprop", "muon"]
    here = [optimizer_color(n) for n in names]
    assert set(here) <= set(OKABE_ITO.values()) and len(set(here)) > 1
    code = ("import importlib.util as u; s = u.spec_from_file_location('palette', {path!r}); m = u.module_from_spec(s); "
            "s.loader.exec_module(m); print([m.optimizer_color(n) for n in {names!r}])").format(
        path=str(Path(palette.__file__)), names=names)
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123"}).stdout
    assert re.findall(r"#[0-9A-F]{6}", other) == here


def test_bad_names_and_ranks_raise():
    with pytest.raises(TypeError, match="None"):
        optimizer_color(None)
    with pytest.raises(ValueError, match="-1"):
        seed_linestyle(-1)


def test_run_infos_and_series(analysis_seeds):
    infos = run_infos(analysis_seeds)
    assert [(r.label, r.optimizer, r.seed, r.linestyle) for r in infos] == [
        ("gn-seed0", "gn", 0, "-"), ("gn-seed1", "gn", 1, "--"), ("adam-seed0", "adam", 0, "-"),
        ("adam-seed1", "adam", 1, "--")]
    x, y = step_series(analysis_seeds, "loss", 1)
    np.testing.assert_array_equal(y, analysis_seeds["loss"].isel(run=1).values)
    with pytest.raises(ValueError, match="no variable 'nope'"):
        step_series(analysis_seeds, "nope", 0)
    with pytest.raises(ValueError, match="expected \\('step',\\)"):
        step_series(analysis_seeds, "cka_init", 0)


def test_two_dimensional_checkpoint_steps(analysis_ds):
    steps = np.stack([analysis_ds["checkpoint_step"].values * k for k in (1, 2, 3)])
    ds = analysis_ds.assign_coords(checkpoint_step=(("run", "checkpoint"), steps))
    np.testing.assert_array_equal(checkpoint_steps(ds, 2), steps[2])
    x, _ = checkpoint_series(ds, "test_acc", 1)
    np.testing.assert_array_equal(x, steps[1])


def test_as_combined_adds_a_run_dim(analysis_ds):
    one = analysis_ds.isel(run=0, drop=True).drop_vars("cka_between")
    one.attrs = {"optimizer": "kgn", "seed": 2}
    ds = as_combined(one)
    assert ds.sizes["run"] == 1
    (info,) = run_infos(ds)
    assert (info.label, info.optimizer, info.seed, info.color) == ("kgn", "kgn", 2, optimizer_color("kgn"))
    with pytest.raises(ValueError, match="no runs"):
        as_combined(analysis_ds.isel(run=[]))
