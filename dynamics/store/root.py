"""The root ``zarr.json`` of a run store as its commit record.

A commit of the writer is one atomic replacement of the root ``zarr.json`` (a temporary file, then
``os.replace``). The file holds the root attributes — among them ``committed`` — and zarr v3
*consolidated metadata*: the metadata of every group and array of the store, with each row array's
shape cut to its committed rows and uncommitted variables left out. Plain xarray
(``xr.open_zarr(path, group="metrics")``, ``xr.open_datatree(path, engine="zarr")``) reads the
consolidated metadata, so at any moment — while the run is being written, and after the writer was
killed — a plain reader sees exactly the committed rows, without the fallback warning that a store
without consolidated metadata gives, and without listing the folder (where it would warn about the
lock file and ``resume/``).

The entries have exactly the form that ``zarr.consolidate_metadata`` writes: an array's entry is its
``zarr.json``; a group's is its ``zarr.json`` plus an empty inline ``consolidated_metadata``; keys are sorted (zarr reads the
children of a group from adjacent keys).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from dynamics.store import schema
from dynamics.store.chunks import write_document
from dynamics.store.validate import read_document

_EMPTY_CONSOLIDATED = {"kind": "inline", "must_understand": False, "metadata": {}}


def read_nodes(path: Path) -> dict[str, dict[str, Any]]:
    """Metadata of every group and array below the root of store ``path``, keyed by their path in the
    store ("metrics", "metrics/loss", …), read from their ``zarr.json`` files. Folders without one
    (``resume/``) and array folders' contents are not entered. A document that is not a JSON object
    (truncated, edited) → StoreError naming the store, the node and the file: a damaged document is
    never copied into the commit record."""
    nodes: dict[str, dict[str, Any]] = {}

    def walk(rel: str) -> None:
        folder = path / rel if rel else path
        for child in sorted(folder.iterdir()):
            meta_path = child / "zarr.json"
            if child.name.startswith(".") or not meta_path.is_file():
                continue
            key = f"{rel}/{child.name}" if rel else child.name
            meta = read_document(path, meta_path, f"{'variable' if '/' in key else 'group'} {key}")
            if meta.get("node_type") == "group":
                meta["consolidated_metadata"] = copy.deepcopy(_EMPTY_CONSOLIDATED)
                nodes[key] = meta
                walk(key)
            else:
                nodes[key] = meta
    walk("")
    return nodes


def committed_view(nodes: dict[str, dict[str, Any]], committed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``nodes`` as a reader should see them under the ``committed`` mark: row arrays of the variables
    listed in ``committed`` with their first dimension set to the committed rows, other row arrays
    left out, every other node as it is."""
    view = {}
    for key, meta in nodes.items():
        group, _, name = key.partition("/")
        if group in schema.ROW_DIM and name and "/" not in name:
            if name not in committed["variables"][group]:
                continue
            meta = dict(meta, shape=[schema.committed_rows(committed, group)] + list(meta["shape"][1:]))
        view[key] = meta
    return dict(sorted(view.items()))   # zarr groups a parent's children by adjacency in this order


def root_document(attrs: dict[str, Any], view: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The root ``zarr.json`` content: group metadata with ``attrs`` and the consolidated ``view``."""
    return {"attributes": attrs, "zarr_format": 3,
            "consolidated_metadata": {"kind": "inline", "must_understand": False, "metadata": view},
            "node_type": "group"}


def write_root(path: Path, document: dict[str, Any]) -> None:
    """Replace ``path``/zarr.json by ``document`` atomically (:func:`dynamics.store.chunks.write_document`:
    a temporary ``*.partial`` file, then ``os.replace``; the temporary file is removed when the write
    fails)."""
    write_document(path, document)
