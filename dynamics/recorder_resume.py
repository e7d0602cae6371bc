"""What a resumed :class:`dynamics.recorder.Recorder` must match in the store it continues.

A resume continues one run: the same probe (inputs, labels, positions in the data set), the same
``params`` mode, the same config (where one is given) and the same trained parameters — names and
shapes (:func:`dynamics.recorder_names.check_same_parameters`). Anything else is refused with a
StoreError (a ValueError) naming the difference, and the store is left as it was (its lock released).
"""

from __future__ import annotations

import json

import numpy as np

from dynamics.errors import StoreError
from dynamics.recorder_names import PARAMETERS_ATTR, check_same_parameters, stored_parameters
from dynamics.store import schema
from dynamics.store.writer import RunWriter


def check_resumed(writer: RunWriter, x: np.ndarray, y: np.ndarray, config: dict | None, params: str | None,
                  index: np.ndarray | None, parameters: list[tuple[str, tuple[int, ...]]]) -> None:
    """Refuse (StoreError naming the difference; the writer abandoned) a resume of ``writer``'s store
    with another probe, probe index, ``params`` mode, config or set of trained ``parameters`` (name,
    shape). A store that lists no parameters yet (written before the list) gets it."""
    path = writer.path
    try:
        stored_index = writer.read_probe_index()
        if index is not None and stored_index is not None and not np.array_equal(index, stored_index):
            raise StoreError(f"{path}: the probe_index given differs from the one stored in the run")
        stored_params = schema.params_mode(writer.attrs)
        if params is not None and params != stored_params:
            raise StoreError(f"{path}: params={params!r} differs from the store's params={stored_params!r}; "
                             f"resume with the stored mode (or params=None)")
        stored_x, stored_y = writer.read_probe()
        if not (np.array_equal(stored_x, x) and np.array_equal(stored_y, y)):
            raise StoreError(f"{path}: the probe given differs from the probe stored in the run")
        stored = writer.read_config()
        if config is not None and config != stored:
            keys = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
            raise StoreError(f"{path}: config differs from the stored config in keys {keys}")
        recorded = stored_parameters(writer)
        if recorded is not None:
            try:
                check_same_parameters(path, recorded, parameters)
            except ValueError as err:
                raise StoreError(str(err)) from None
    except BaseException:
        writer.abandon()
        raise
    writer.del_attr("error")


def listed_parameters(writer: RunWriter, manifest: list) -> None:
    """Store ``manifest`` (:attr:`RecorderNames.manifest`) as the root attribute ``parameters`` where
    the store does not list them yet (stores written before the list)."""
    if PARAMETERS_ATTR not in writer.attrs:
        writer.set_attrs(**{PARAMETERS_ATTR: json.dumps(manifest)})
