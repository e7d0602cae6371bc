"""One rule for a missing optional framework: ImportError naming the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, what: str) -> ModuleType:
    """``importlib.import_module(module)``, or ImportError saying ``what`` needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{what} needs the {module.split('.')[0]!r} package, which is not importable "
                          f"({error}); install it with: pip install \"gn-dynamics[{extra}]\"") from error
