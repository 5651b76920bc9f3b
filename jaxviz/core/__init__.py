"""The engine: objectives, penalties, operators, transforms, parameterizations, update rules and the loop.

An ``Ensemble`` of networks is one network to the engine (``core/ensemble.py``).

Everything here is a pure function or a frozen record, compiled with ``jit`` and mapped with ``vmap``;
nothing here imports a concrete architecture (``jaxviz.models``) or anything above it.
"""

from jaxviz.core import colour, directions, interpolation, objectives, operators, penalties, transforms, updates
from jaxviz.core.accentuation import SeededFourier, fourier_inverse, proximity
from jaxviz.core.colour import colour_sqrt_from_images
from jaxviz.core.cppn import CPPN
from jaxviz.core.ensemble import Ensemble
from jaxviz.core.fourier import FourierImage
from jaxviz.core.maco import MacoImage, magnitude_spectrum, transparency
from jaxviz.core.pyramid import PyramidImage, laplacian_pyramid, lowres_image
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
    "colour", "colour_sqrt_from_images", "MacoImage", "magnitude_spectrum", "transparency", "CPPN", "PyramidImage",
    "laplacian_pyramid", "lowres_image", "SeededFourier", "fourier_inverse", "proximity",
]
