"""Feature accentuation (Hamblin et al. 2024, faccent): a Fourier image seeded at a real image, kept near it.

``accentuation`` returns the preset (a ``SeededFourier`` fitted to the model's card, Adam like
``lucid``) and the proximity term for the objective: ``objective - weight * term`` keeps the result near
the seed, measured in the activations of ``layer`` (faccent's regularization layer) or, with
``layer="image"``, in the input itself.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from jaxviz.core import transforms as T
from jaxviz.core.accentuation import SeededFourier, proximity
from jaxviz.core.loop import Method
from jaxviz.core.objectives import IMAGE, Objective
from jaxviz.models import preprocessing as pp
from jaxviz.models.model import Model
from jaxviz.recipes.lucid import fourier_image_for
from jaxviz.recipes.preset import Preset


def seeded_fourier_for(model: Model, image: np.ndarray, noise: float = 0.0, **kwargs: Any) -> SeededFourier:
    """A SeededFourier for ``model``'s card starting at ``image`` (display space: uint8 gray or RGB)."""
    h, w = model.input_shape[0], model.input_shape[1]
    start = pp.to_network(np.asarray(image)[None], model.preprocessing)[0]
    return SeededFourier(fourier_image_for(h, w, model.preprocessing, **kwargs), tuple(start.ravel().tolist()),
                         noise)


def proximity_to(model: Model, image: np.ndarray, layer: str = IMAGE) -> Objective:
    """The distance to ``image`` (display space) in ``layer``'s activations of it, or in the input itself."""
    x = pp.to_network(np.asarray(image)[None], model.preprocessing)
    if layer == IMAGE:
        return proximity(x, IMAGE)
    reference = model.function(model.params, jnp.asarray(x), (layer,))[layer]
    return proximity(np.asarray(reference), layer)


def accentuation(model: Model, image: np.ndarray, layer: str = IMAGE, steps: int = 128, lr: float = 0.05,
                 robust: bool = False) -> tuple[Preset, Objective]:
    """(preset, proximity term) for accentuating a unit in ``image``: subtract ``weight * term`` from it."""
    method = Method(steps, optax.adam(lr), transform=T.standard_transforms() if robust else None,
                    name="accentuation")
    return Preset(seeded_fourier_for(model, image), method, name="accentuation"), proximity_to(model, image, layer)


__all__ = ["accentuation", "seeded_fourier_for", "proximity_to"]
