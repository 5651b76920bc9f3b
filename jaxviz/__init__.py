"""jaxviz: synthesize the preferred inputs of neurons with JAX.

``jaxviz.visualize`` / ``jaxviz.visualize_batch`` run one or many optimizations (``jaxviz.api``); the building blocks
live in ``jaxviz.objectives``, ``jaxviz.priors``, ``jaxviz.param``, ``jaxviz.transforms``,
``jaxviz.optimize`` and ``jaxviz.presets``; networks in ``jaxviz.models``.
"""

import importlib

__version__ = "0.1.0"

# Reachable as attributes without importing them (and JAX) at ``import jaxviz``.
_LAZY_SUBMODULES = frozenset({"presets", "objectives", "priors", "param", "transforms", "optimize", "models",
                              "inverse_set", "sweep", "render", "api"})
_LAZY_FUNCTIONS = {"visualize": "jaxviz.api", "visualize_batch": "jaxviz.api", "unit_keys": "jaxviz.api"}


def __getattr__(name: str):
    """Submodules and the entry points, imported on first access."""
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"jaxviz.{name}")
    if name in _LAZY_FUNCTIONS:
        return getattr(importlib.import_module(_LAZY_FUNCTIONS[name]), name)
    raise AttributeError(f"module 'jaxviz' has no attribute {name!r}")
