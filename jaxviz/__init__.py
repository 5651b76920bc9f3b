"""jaxviz: synthesize the preferred inputs of neurons with JAX.

The layers, each importing only those below it (``docs/architecture.md``):

- ``jaxviz.core``: objectives, penalties, operators, transforms, parameterizations, update rules, the loop;
- ``jaxviz.models``: the CaffeNet and generator ports, ``Model``, ``load``, checkpoints, shipped data;
- ``jaxviz.io``: atomic files, PNGs and contact sheets, the gallery;
- ``jaxviz.scoring``: reference sets, a second opinion, the path check, flags; the scored ``visualize``;
- ``jaxviz.recipes``: the seed papers' methods as presets, and the registry of methods by name;
- ``jaxviz.lenses``: a given image seen through a network: DeconvNet, saliency, guided backprop, DeepDream;
- ``jaxviz.inverse_set``: inverse-set sampling;
- ``jaxviz.workflows``: sweeps, inverse sets over units, the demo; ``jaxviz.cli`` on top.

Start with ``jaxviz.visualize(model, objective, ...)`` or a recipe's ``preset.visualize(model, objective)``.
"""

__version__ = "0.1.0"

from jaxviz import core, io, models, scoring, recipes, inverse_set, workflows  # noqa: E402  (layers, bottom up)
from jaxviz.core import objectives, operators, penalties, transforms, updates  # noqa: E402
from jaxviz.core.loop import Method, Result  # noqa: E402
from jaxviz.core.objectives import Objective  # noqa: E402
from jaxviz.core.ensemble import Ensemble  # noqa: E402
from jaxviz.core.params import BoundedPixels, GeneratorCode, NormalizedNoise, Pixels  # noqa: E402
from jaxviz.core.fourier import FourierImage  # noqa: E402
from jaxviz.core.run import OptimizationFailed, optimize, optimize_batch, unit_keys  # noqa: E402
from jaxviz.scoring import Report, Visualization, visualize, visualize_batch  # noqa: E402
from jaxviz.models import Model, from_equinox, from_flax, from_function, from_nnx, load  # noqa: E402
from jaxviz.recipes import Preset  # noqa: E402
from jaxviz.workflows.sweep import SweepConfig, sweep  # noqa: E402
from jaxviz.workflows.compile_cache import enable_compilation_cache  # noqa: E402
from jaxviz import lenses  # noqa: E402

__all__ = [
    "__version__", "core", "io", "models", "scoring", "recipes", "inverse_set", "workflows", "objectives", "operators",
    "penalties", "transforms", "updates", "Method", "Result", "Objective", "Ensemble", "BoundedPixels",
    "GeneratorCode",
    "NormalizedNoise", "Pixels", "FourierImage", "OptimizationFailed", "optimize", "optimize_batch", "unit_keys",
    "Report", "Visualization", "visualize", "visualize_batch", "Model", "load", "from_flax", "from_nnx",
    "from_equinox", "from_function", "Preset", "SweepConfig", "sweep", "lenses",
    "enable_compilation_cache",
]
