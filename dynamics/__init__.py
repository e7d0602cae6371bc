"""Core of the toolkit: models, exact Gauss–Newton, empirical NTK, capture, run stores, Recorder.

This layer imports no other package of the project (trainers, analysis, reports sit above it).
"""

__version__ = "0.1.0"

# Public names imported on first use, so that `import dynamics` stays light (no zarr/xarray load).
_LAZY_EXPORTS = {
    "Recorder": "dynamics.recorder",
    "open_run": "dynamics.store",
}


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        import importlib
        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'dynamics' has no attribute {name!r}")
