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
import numpy as np

from jaxviz.models import checkpoint, shipped
from jaxviz.models.caffenet import CaffeNet, CaffeNetConfig
from jaxviz.models.generator import Generator, GeneratorConfig
from jaxviz.models.lenet import LeNet, LeNetConfig
from jaxviz.models.model import Model

# architecture -> (module class, config class)
ARCHITECTURES: dict[str, tuple[type[nn.Module], Any]] = {
    "caffenet": (CaffeNet, CaffeNetConfig),
    "generator": (Generator, GeneratorConfig),
    "lenet": (LeNet, LeNetConfig),
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
    card_file = folder / checkpoint.METADATA_FILE
    try:
        config = config_cls.from_dict(card.get("config", {}))
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise checkpoint.CheckpointError(f"{card_file}: its config does not describe a {architecture} "
                                         f"({str(err)[:200]}); reconvert the model") from None
    module = module_cls(config)
    _check_params_fit(module, config, params, card_file)
    params = jax.tree_util.tree_map(jax.numpy.asarray, params)
    return Model(architecture, module, params, card, folder)


def _check_params_fit(module: nn.Module, config: Any, params: dict, card_file: pathlib.Path) -> None:
    """The stored params have the shapes the card's config builds (an edited config is caught here)."""
    shape = ((config.input_size, config.input_size, config.in_channels) if hasattr(config, "input_size")
             else (config.code_size,))
    try:
        wanted = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *shape), np.float32))
    except Exception as err:  # a config no network can be built from
        raise checkpoint.CheckpointError(f"{card_file}: its config builds no network ({str(err)[:200]}); "
                                         f"reconvert the model") from None
    want = jax.tree_util.tree_map(lambda a: list(a.shape), dict(wanted["params"]))
    if want != checkpoint.param_shapes(params):
        raise checkpoint.CheckpointError(f"{card_file}: the stored parameters do not fit the network its config "
                                         f"describes; reconvert the model")


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)} "
                         f"(other Caffe networks: weights_convert.load_caffe(prototxt, caffemodel))")


__all__ = ["ARCHITECTURES", "load"]
