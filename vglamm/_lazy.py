"""Package exports resolved on first use, so importing a package does not import torch, PyAV or Java."""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, exports: dict[str, str]):
    """Return ``(__getattr__, __all__)`` for a package whose public ``name`` lives in module ``exports[name]``
    (absolute, or relative to ``package`` when it starts with a dot). A resolved name is cached on the package."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__, sorted(exports)
