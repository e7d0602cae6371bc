"""How the probe's model inputs are laid out in a run store's ``probe`` group (DESIGN §4).

The probe's inputs have the structure the model's forward takes (:mod:`dynamics.inputs`), one
variable per tensor, every variable with the leading dim ``probe``:

- one tensor → ``x``: floating (probe, feature) — (probe, feature_0, feature_1, …) for samples of
  rank > 1 — or integer/bool (token ids, masks) (probe, position) / (probe, position_0, …); a 1-D
  input is (probe). This is the layout of stores written before pytree probes.
- a tuple of k tensors (positional arguments) → ``x_0`` … ``x_{k-1}``, each with attribute
  ``input_position`` (its position) and dims (probe, x_i_dim1, x_i_dim2, …);
- a dict (keyword arguments) → ``x_<key>`` per key, each with attribute ``input_keyword`` (the
  key) and dims (probe, x_<key>_dim1, …). Keys are identifiers, so the names need no encoding.

Dtypes are those of :func:`dynamics.convert.to_numpy` (int64 token ids stay int64). The labels ``y``
and ``probe_index`` sit beside them. :func:`input_variables` makes the variables;
:func:`read_inputs` rebuilds the structure from them (plain xarray sees the variables as they are).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: Variables of the ``probe`` group that are not model inputs.
NOT_INPUTS = ("y", "probe_index")


def _single_dims(array: np.ndarray) -> tuple[str, ...]:
    base = "feature" if array.dtype.kind == "f" else "position"
    if array.ndim == 1:
        return ("probe",)
    if array.ndim == 2:
        return ("probe", base)
    return ("probe",) + tuple(f"{base}_{i}" for i in range(array.ndim - 1))


def _leaf_dims(name: str, array: np.ndarray) -> tuple[str, ...]:
    return ("probe",) + tuple(f"{name}_dim{i}" for i in range(1, array.ndim))


def input_variables(x: np.ndarray | tuple | Mapping) -> dict[str, tuple[tuple[str, ...], np.ndarray, dict[str, Any]]]:
    """name → (dims, array, attributes) of the probe inputs ``x`` (numpy arrays in the structure the
    model takes, already validated by the caller: one leading sample dimension shared by all)."""
    if isinstance(x, np.ndarray):
        return {"x": (_single_dims(x), x, {})}
    if isinstance(x, Mapping):
        out = {}
        for key, array in x.items():
            name = f"x_{key}"
            out[name] = (_leaf_dims(name, array), array,
                         {"input_keyword": key, "long_name": f"probe input {key}",
                          "description": f"the fixed probe set's keyword input {key!r} of the model's forward"})
        return out
    out = {}
    for i, array in enumerate(x):
        name = f"x_{i}"
        out[name] = (_leaf_dims(name, array), array,
                     {"input_position": i, "long_name": f"probe input {i}",
                      "description": f"the fixed probe set's positional input {i} of the model's forward"})
    return out


def read_inputs(arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Mapping[str, Any]]) -> np.ndarray | tuple | dict:
    """The probe inputs rebuilt from the ``probe`` group's variables (``arrays``: name → values,
    ``attrs``: name → attributes; ``y`` and ``probe_index`` are ignored). ValueError for a group whose
    input variables fit none of the layouts of the module docstring."""
    names = [n for n in arrays if n not in NOT_INPUTS]
    keyword = {n: attrs.get(n, {}).get("input_keyword") for n in names}
    position = {n: attrs.get(n, {}).get("input_position") for n in names}
    if names == ["x"] and keyword["x"] is None and position["x"] is None:
        return arrays["x"]
    if names and all(keyword[n] is not None for n in names):
        return {str(keyword[n]): arrays[n] for n in names}
    if names and all(position[n] is not None for n in names):
        order = sorted(names, key=lambda n: int(position[n]))
        if [int(position[n]) for n in order] != list(range(len(order))):
            raise ValueError(f"probe input positions {[position[n] for n in order]} are not 0 … {len(order) - 1}")
        return tuple(arrays[n] for n in order)
    raise ValueError(f"the probe group's input variables {names} fit no probe layout (x; x_0 … with "
                     f"input_position; x_<key> with input_keyword)")


def input_names(names: list[str]) -> list[str]:
    """The model-input variables among the ``probe`` group's variable names (all but y, probe_index)."""
    return [n for n in names if n not in NOT_INPUTS]
