"""The store a :class:`dynamics.recorder.Recorder` writes: a new one, or one it resumes (:func:`open_store`).

A new store gets the keys of the trained parameters and recorded layers before it exists, so a name
the store cannot hold is refused without leaving anything on disk. A resume continues one run: the same probe (inputs, labels, positions in the data set), the same
``params`` mode, the same config (where one is given), the same task (a stated one) and the same
trained parameters — names and shapes (:func:`dynamics.recorder_names.check_same_parameters`). Anything else is refused with a
StoreError (a ValueError) naming the difference, and the store is left as it was (its lock released).
A model whose parameters (and so its NTK) changed to a dtype the store's variables cannot hold — float64
into float32 — is refused there too (:func:`check_resumed_dtypes`), before any row is logged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dynamics.convert import stored_dtype
from dynamics.errors import StoreError
from dynamics.recorder_inputs import same_inputs
from dynamics.recorder_names import PARAMETERS_ATTR, RecorderNames, check_same_parameters, stored_parameters
from dynamics.store import schema
from dynamics.store.writer import RunWriter


def open_store(path: Path, resume: bool, x: np.ndarray, y: np.ndarray, config: dict | None, params: str | None,
               index: np.ndarray | None, parameters: list[tuple[str, tuple[int, ...], torch.dtype]], layers: list[str],
               task: str | None, task_source: str,
               kernel_dtype: torch.dtype | None) -> tuple[RunWriter, RecorderNames, str]:
    """(the writer, the keys, the task) of the store at ``path``: created with the probe ``x``, ``y``
    (positions ``index``), ``config``, ``params`` mode, the list of trained ``parameters`` (name,
    shape, dtype) and ``task`` (from ``task_source``, :mod:`dynamics.task`; None only on resume, see
    :func:`resumed_task`), or resumed after
    :func:`check_resumed` and :func:`check_resumed_dtypes` (``kernel_dtype``: the dtype the NTK is
    computed in, None without the NTK; the stored task kept: :func:`resumed_task`). ValueError for a parameter or layer name the store cannot hold
    (:class:`RecorderNames`), StoreError as :func:`check_resumed`, :func:`check_resumed_dtypes`,
    :func:`resumed_task` and :meth:`RunWriter.create`/:meth:`RunWriter.resume` say."""
    trained = [(name, shape) for name, shape, _ in parameters]
    if not resume:
        names = RecorderNames({}, trained, layers)
        attrs = {"params": params or "all", PARAMETERS_ATTR: json.dumps(names.manifest),
                 **schema.identity_attrs(config), "task": task, "task_source": task_source}
        writer = RunWriter.create(path, config=config, probe_x=x, probe_y=y, probe_index=index, attrs=attrs)
    else:
        writer = RunWriter.resume(path)
        try:
            names = RecorderNames({group: writer.existing(group) for group in schema.ROW_DIM}, trained, layers)
        except BaseException:
            writer.abandon()
            raise
        check_resumed_dtypes(writer, names, parameters, kernel_dtype, y.shape[0])
        check_resumed(writer, x, y, config, params, index, trained)
        task = resumed_task(writer, task, task_source)
        if PARAMETERS_ATTR not in writer.attrs:      # a store written before the list
            writer.set_attrs(**{PARAMETERS_ATTR: json.dumps(names.manifest)})
    names.bind(writer)
    return writer, names, task


def check_resumed_dtypes(writer: RunWriter, names: RecorderNames,
                         parameters: list[tuple[str, tuple[int, ...], torch.dtype]],
                         kernel_dtype: torch.dtype | None, n_probe: int) -> None:
    """Refuse (StoreError naming the variable and both dtypes; the writer abandoned) a resume whose trained
    ``parameters`` (name, shape, dtype) — or the N×N NTK of the ``n_probe`` samples, computed in
    ``kernel_dtype`` (:func:`dynamics.ntk.api.ntk_dtype`; None: not recorded) — would be stored in a dtype
    their stored variables cannot hold exactly (:meth:`RunWriter.check_checkpoint`, the check every
    checkpoint makes): the model's dtype changed (``model.double()`` on a float32 store). A dtype the
    stored one holds exactly (float32 into float64) is accepted, as at a checkpoint."""
    def like(shape: tuple[int, ...], dtype: torch.dtype) -> np.ndarray:
        return np.broadcast_to(np.empty((), dtype=stored_dtype(dtype)), shape)
    stored = writer.existing("params")   # a name or shape that differs is for check_resumed to name
    params = {names.params[name]: (stored[names.params[name]].dims, like(shape, dtype))
              for name, shape, dtype in parameters
              if names.params[name] in stored and stored[names.params[name]].shape == tuple(shape)}
    kernel = {} if kernel_dtype is None else {"ntk": (("probe", "probe_"), like((n_probe, n_probe), kernel_dtype))}
    try:
        writer.check_checkpoint({}, kernel, params)
    except StoreError as err:
        writer.abandon()
        raise StoreError(f"{writer.path}: cannot resume with this model: {err}") from None
    except BaseException:
        writer.abandon()
        raise


def resumed_task(writer: RunWriter, task: str | None, source: str) -> str:
    """The task of a resumed store: the stored one; a stated ``task`` that differs → StoreError (the
    writer abandoned); a store written before tasks were recorded gets ``task``. ``task`` None: the
    rule found the targets ambiguous (``source`` says why, :func:`dynamics.task.infer_task`) — the
    stored task decides; a store without one → ValueError (``source``; the writer abandoned)."""
    stored = writer.attrs.get("task")
    if task is None:
        if stored is None:
            writer.abandon()
            raise ValueError(source)
        return stored
    if stored is None:
        writer.set_attrs(task=task, task_source=source)
        return task
    if stored != task and not source.startswith("inferred"):
        writer.abandon()
        raise StoreError(f"{writer.path}: task={task!r} ({source}) differs from the store's task={stored!r}")
    return stored


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
        if not (same_inputs(stored_x, x) and np.array_equal(stored_y, y)):
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
