"""Colours per optimiser and reading runs out of the analysis Dataset."""

import re

import numpy as np
import pytest
import xarray as xr

from reports.palette import KNOWN_OPTIMIZER_COLORS, OKABE_ITO, assign_colors, optimizer_color, seed_linestyle
from reports.runs import as_combined, checkpoint_series, checkpoint_steps, run_infos, step_series


def test_known_optimizers_have_fixed_distinct_okabe_ito_colours():
    assert optimizer_color("gn") == "#D55E00" and optimizer_color("adam") == "#009E73"
    assert optimizer_color(" GN ") == optimizer_color("gn")
    assert len(set(KNOWN_OPTIMIZER_COLORS.values())) == len(KNOWN_OPTIMIZER_COLORS)
    assert set(KNOWN_OPTIMIZER_COLORS.values()) <= set(OKABE_ITO.values())


def test_other_names_get_distinct_colours_in_order_of_appearance():
    names = ["lion", "shampoo", "adagrad", "rmsprop", "muon", "sophia", "gn", "adam", "sgd", "kgn", "x", "y", "z"]
    colors = assign_colors(names)
    assert len(set(colors.values())) == len(names)  # distinct for any number of optimisers
    assert [colors[n] for n in names[:4]] == [OKABE_ITO[k].upper() for k in ("orange", "sky_blue", "black", "yellow")]
    assert all(colors[n] == KNOWN_OPTIMIZER_COLORS[n] for n in ("gn", "adam", "sgd", "kgn"))
    assert all(re.fullmatch(r"#[0-9A-F]{6}", c) for c in colors.values())
    # the order, not the name, decides: the same names listed the other way round swap colours
    swapped = assign_colors(["shampoo", "lion"])
    assert swapped["shampoo"] == colors["lion"] and swapped["lion"] == colors["shampoo"]
    # case and surrounding spaces name the same optimiser
    assert assign_colors(["Lion", " lion "]) == {"Lion": colors["lion"], " lion ": colors["lion"]}


def test_run_infos_give_every_optimiser_its_own_colour(analysis_ds):
    many = xr.concat([analysis_ds.isel(run=[0])] * 9, dim="run")
    many = many.assign_coords(run=[f"opt{i}" for i in range(9)], optimizer=("run", [f"opt{i}" for i in range(9)]),
                              label=("run", [f"opt{i}" for i in range(9)]))
    assert len({r.color for r in run_infos(many)}) == 9


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
