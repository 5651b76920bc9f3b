"""DGN-AM (Nguyen et al. 2016): the fc6 code of a generator moved by normalized gradient ascent.

``h += lr_i u / mean|u|``, ``u = J_G^T g``, then clipped to ``[0, ub]`` and multiplied by 0.99, as the
authors' public code runs it (``methods.md``); the code bounds come from ``jaxviz.models.code_bounds``.
"""

from __future__ import annotations

from typing import Any

import optax

from jaxviz.core import operators
from jaxviz.core.loop import Method
from jaxviz.core.updates import linear_schedule, scale_by_mean_abs
from jaxviz.models.model import Model, check_code_bounds, code_bounds
from jaxviz.recipes.generator import generator_code
from jaxviz.recipes.preset import Preset


def dgn_am(generator: Model, bounds: Any = None, steps: int = 200, lr_start: float = 8.0, lr_end: float = 1e-10,
           decay: float = 0.01) -> Preset:
    """DGN-AM (Nguyen et al. 2016) as its public code runs it; target conv units with ``position="center"``.

    ``steps`` counts forward passes, as the original's ``n_iters``: it returns the image of its last
    forward pass, ``G(h_{n-1})``, so the loop makes ``steps - 1`` updates and ``Result.image`` is that
    image (``Result.z`` the code it came from). Update ``i``: ``h += lr_i u / mean|u|``, ``u = J_G^T g``,
    ``lr_i = lr_start + (lr_end - lr_start) i / steps``; then clip each unit to ``[0, ub_j]``, then
    ``h *= 1 - decay``; stop when the gradient is exactly zero. Start ``h ~ N(0, 1)`` from the key.

    Departures: the original's returned image is the last forward pass's image after its own pixel step
    (``lr_{n-1} g / mean|g|``, about 0.04 on the 0-255 scale); a NaN gradient stops the run here (the
    engine's rule) where the original skips that update; the mean-abs division has a 1e-12 guard.
    """
    if steps < 1:
        raise ValueError(f"dgn_am needs steps >= 1, got {steps}")
    ub = check_code_bounds(bounds, generator.config.code_size) if bounds is not None else code_bounds(generator)
    method = Method(
        steps=steps - 1,
        optimizer=optax.chain(scale_by_mean_abs(), optax.scale_by_learning_rate(
            linear_schedule(lr_start, lr_end, steps))),
        operator=operators.chain(operators.clip_code(0.0, ub), operators.decay(decay)),
        stop_on_zero_grad=True, name="dgn_am")
    return Preset(generator_code(generator), method, generator.params, name="dgn_am")


__all__ = ["dgn_am"]
