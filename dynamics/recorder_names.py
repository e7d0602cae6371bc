"""The keys of a Recorder's store: every name the Recorder is given, as :mod:`dynamics.store.names` encodes it.

:class:`RecorderNames` is built when the :class:`dynamics.recorder.Recorder` is created. It gives each
trained parameter its key in ``params`` (dims ``<key>_dim0``, ...) and each recorded layer its
variable ``rep_<key>`` (dim ``unit_<key>``) in ``checkpoints`` — refusing there, with a ValueError
naming the name, whatever :meth:`dynamics.store.names.GroupKeys.add` refuses — and gives metric and
checkpoint scalars their keys at the ``log``/``checkpoint`` call that first uses them. Each key is
told to the writer with its name, which is stored as the variable's attribute ``name``.

The trained parameters (names and shapes, in the model's order) are stored as the root attribute
``parameters`` (JSON ``[[name, key, [shape...]], ...]``). A resumed store must hold the same set:
:func:`check_same_parameters` refuses another one, naming the names missing and new and the shapes
that changed.
"""

from __future__ import annotations

import json
from typing import Any

from dynamics.store import names as store_names
from dynamics.store import schema
from dynamics.store.names import GroupKeys, Stored, encode
from dynamics.store.writer import RunWriter

#: Root attribute listing the trained parameters: JSON [[name, key, [shape...]], ...].
PARAMETERS_ATTR = "parameters"
_COORDS = set(schema.CHECKPOINT_COORDS) | set(schema.LEGACY_CHECKPOINT_COORDS)
_RESERVED = {"metrics": set(schema.METRICS_COORDS) | schema.RESERVED_SCALARS,
             "checkpoints": _COORDS | schema.RESERVED_SCALARS | {"probe_"},
             "params": _COORDS}


class RecorderNames:
    """The keys of one Recorder's store (module docstring).

    Args:
        existing: group → the variables the store holds (:meth:`RunWriter.existing`; empty for a new
            store): their keys stay in use, and a name the store holds keeps its key.
        parameters: (name, shape) of every trained parameter, in the model's order.
        layers: the recorded layers' names.

    Raises ValueError naming a parameter or layer whose key is refused.
    """

    def __init__(self, existing: dict[str, dict[str, Stored]], parameters: list[tuple[str, tuple[int, ...]]],
                 layers: list[str]) -> None:
        self._writer: RunWriter | None = None
        self.labels: dict[tuple[str, str], str] = {}
        self.groups = {group: GroupKeys(group, _RESERVED[group], existing.get(group)) for group in _RESERVED}
        self.params: dict[str, str] = {}
        for name, shape in parameters:
            self.params[name] = self._add("params", name, "parameter",
                                          dims=lambda key, n=len(shape): [f"{key}_dim{i}" for i in range(n)])
        self.layers = {layer: self._add("checkpoints", layer, "layer", prefix="rep_",
                                        dims=lambda key: ["unit_" + key.removeprefix("rep_")])
                       for layer in layers}
        self.manifest = [[name, self.params[name], list(shape)] for name, shape in parameters]

    def bind(self, writer: RunWriter) -> None:
        """Tell ``writer`` every name given so far, and each one given later (:meth:`RunWriter.label`)."""
        self._writer = writer
        for (group, key), name in self.labels.items():
            writer.label(group, key, name)

    def _add(self, group: str, name: str, what: str, **options: Any) -> str:
        key = self.groups[group].add(name, what, **options)
        self.labels[(group, key)] = name
        if self._writer is not None:
            self._writer.label(group, key, name)
        return key

    def scalar(self, group: str, name: str) -> str:
        """The key of scalar ``name`` in ``group`` ("metrics" or "checkpoints"); ValueError naming it when
        its key is reserved (``step``, ``ntk``, ``rep_*``, ...) or refused as any name is."""
        keys = self.groups[group]
        if name in keys.keys:
            return keys.keys[name]
        key = encode(name)
        if key in schema.RESERVED_SCALARS or key.startswith("rep_"):
            raise ValueError(f"scalar name {name!r} is reserved in the {group} group (its key {key!r} names a "
                             f"coordinate or a variable of the Recorder's own); choose another name")
        return self._add(group, name, "scalar")


def stored_parameters(writer: RunWriter) -> list[tuple[str, str | None, tuple[int, ...]]] | None:
    """(name, key, shape) of the trained parameters a store was recorded with: its root attribute
    :data:`PARAMETERS_ATTR`, else (stores written before) its ``params`` variables (names as
    :func:`dynamics.store.names.original` recovers them), else None (no parameter stored yet)."""
    listed = writer.attrs.get(PARAMETERS_ATTR)
    if isinstance(listed, str):
        return [(name, key, tuple(shape)) for name, key, shape in json.loads(listed)]
    existing = writer.existing("params")
    if not existing:
        return None
    return [(stored.name or store_names.original(key), key, stored.shape) for key, stored in existing.items()]


def check_same_parameters(path: object, stored: list[tuple[str, str | None, tuple[int, ...]]],
                          current: list[tuple[str, tuple[int, ...]]]) -> None:
    """ValueError naming the differences when the trained parameters ``current`` (name, shape) of the
    model differ from those ``stored`` in the store at ``path`` — names missing from the model, names
    new in it, shapes that changed — with a hint when one set is the other with a prefix (a wrapper
    such as ``torch.compile``'s ``_orig_mod.`` or DDP's ``module.``)."""
    before = {name: tuple(shape) for name, _, shape in stored}
    now = {name: tuple(shape) for name, shape in current}
    missing = [name for name in before if name not in now]
    new = [name for name in now if name not in before]
    changed = [f"{name} {before[name]} -> {now[name]}" for name in before if name in now and before[name] != now[name]]
    if not (missing or new or changed):
        return
    parts = []
    if missing:
        parts.append(f"missing from the model: {_listed(missing)}")
    if new:
        parts.append(f"new in the model: {_listed(new)}")
    if changed:
        parts.append(f"shape changed: {_listed(changed)}")
    hint = _prefix_hint(missing, new)
    raise ValueError(f"{path}: the model's trained parameters differ from the ones the store was recorded with "
                     f"({'; '.join(parts)}){hint}; resume the same model (same parameter names and shapes, "
                     f"the same parameters trained), or record into a new store")


def _listed(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _prefix_hint(missing: list[str], new: list[str]) -> str:
    """A note when every name of one list is a name of the other with one common prefix."""
    for longer, shorter, whose in ((missing, new, "store's"), (new, missing, "model's")):
        if longer and len(longer) == len(shorter):
            pairs = list(zip(sorted(longer), sorted(shorter)))   # one prefix keeps the order of the rest
            prefixes = {a[:len(a) - len(b)] for a, b in pairs}
            if all(a.endswith(b) and len(a) > len(b) for a, b in pairs) and len(prefixes) == 1:
                return (f" (the {whose} names are the others with the prefix {prefixes.pop()!r}, which a wrapper "
                        f"such as torch.compile or DistributedDataParallel adds)")
    return ""
