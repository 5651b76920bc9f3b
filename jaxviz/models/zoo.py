"""One call to get a network with its weights: ``load("caffenet", folder)``.

With a folder, ``load`` reads weights converted by ``python -m weights_convert``; without one, it returns
the embedded default of that architecture: the small MNIST-trained CaffeNet / fc6 generator pair shipped
inside the package, which runs the same code paths as the real models.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import flax.linen as nn
import jax

from jaxviz.models import checkpoint, shipped
from jaxviz.models.caffenet import CaffeNet, CaffeNetConfig
from jaxviz.models.generator import Generator, GeneratorConfig
from jaxviz.models.model import Model

# architecture -> (module class, config class)
ARCHITECTURES: dict[str, tuple[type[nn.Module], Any]] = {
    "caffenet": (CaffeNet, CaffeNetConfig),
    "generator": (Generator, GeneratorConfig),
}


def load(architecture: str, model_dir: str | os.PathLike | None = None) -> Model:
    """The ``architecture`` ("caffenet" or "generator") with weights from ``model_dir`` (default: embedded)."""
    _check_architecture(architecture)
    folder = shipped.embedded_dir(architecture) if model_dir is None else pathlib.Path(model_dir)
    params, card = checkpoint.restore(folder)
    if card.get("architecture") != architecture:
        raise checkpoint.CheckpointError(
            f"{folder} holds a {card.get('architecture')!r} model, not {architecture!r}")
    module_cls, config_cls = ARCHITECTURES[architecture]
    config = config_cls.from_dict(card.get("config", {}))
    params = jax.tree_util.tree_map(jax.numpy.asarray, params)
    return Model(architecture, module_cls(config), params, card, folder)


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)} "
                         f"(other Caffe networks: weights_convert.load_caffe(prototxt, caffemodel))")


__all__ = ["ARCHITECTURES", "load"]
