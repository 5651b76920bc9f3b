"""The engine: objectives, penalties, operators, transforms, parameterizations, update rules and the loop.

An ``Ensemble`` of networks is one network to the engine (``core/ensemble.py``).

Everything here is a pure function or a frozen record, compiled with ``jit`` and mapped with ``vmap``;
nothing here imports a concrete architecture (``jaxviz.models``) or anything above it.
"""

from jaxviz.core import directions, interpolation, objectives, operators, penalties, transforms, updates
from jaxviz.core.ensemble import Ensemble
from jaxviz.core.fourier import FourierImage
from jaxviz.core.loop import CompiledRun, Method, Result, RunParts, compiled_run, make_run, resolve_loop, run_parts
from jaxviz.core.objectives import Objective
from jaxviz.core.operators import Operator, OperatorContext
from jaxviz.core.params import BoundedPixels, GeneratorCode, NormalizedNoise, Parameterization, Pixels
from jaxviz.core.run import Network, OptimizationFailed, check_setup, optimize, optimize_batch, unit_keys

__all__ = [
    "directions", "interpolation", "Ensemble", "objectives", "operators", "penalties", "transforms", "updates",
    "FourierImage", "CompiledRun", "Method",
    "Result", "RunParts", "compiled_run", "make_run", "resolve_loop", "run_parts", "Objective", "Operator",
    "OperatorContext", "BoundedPixels", "GeneratorCode", "NormalizedNoise", "Parameterization", "Pixels",
    "Network", "OptimizationFailed", "check_setup", "optimize", "optimize_batch", "unit_keys",
]
