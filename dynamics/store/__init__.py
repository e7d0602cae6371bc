"""Run stores: zarr v3 groups of xarray datasets (schema "dynamics.run/1", DESIGN §4), crash-safe appends.

- :class:`RunWriter` creates, appends to, truncates and closes a store (one writer at a time).
- :func:`open_run` reads a store as an ``xarray.DataTree`` with committed data only.
- :func:`check_store` validates a path and returns its root attributes.
"""

from dynamics.store.reader import check_store, open_run
from dynamics.store.schema import SCHEMA, store_name
from dynamics.store.writer import RunWriter

__all__ = ["RunWriter", "open_run", "check_store", "SCHEMA", "store_name"]
