"""jaxviz: synthesize the preferred inputs of neurons with JAX."""

import importlib

__version__ = "0.1.0"

# Submodules reachable as attributes without importing them (and JAX) at ``import jaxviz``.
_LAZY_SUBMODULES = frozenset({"presets"})


def __getattr__(name: str):
    """``jaxviz.presets`` and the like, imported on first access."""
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"jaxviz.{name}")
    raise AttributeError(f"module 'jaxviz' has no attribute {name!r}")
