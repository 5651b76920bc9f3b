"""One call to get a network with its weights: ``load("caffenet", folder)``.

With a folder, ``load`` reads weights converted by ``python -m weights_convert``; without one, it returns
the embedded default of that architecture: the small MNIST-trained CaffeNet / fc6 generator pair shipped
inside the package, which runs the same code paths as the real models.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import pathlib
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax

from jaxviz.models import checkpoint
from jaxviz.models.caffenet import CaffeNet, CaffeNetConfig
from jaxviz.models.generator import Generator, GeneratorConfig

# architecture -> (module class, config class, folder of the embedded default under jaxviz/data/embedded)
ARCHITECTURES: dict[str, tuple[type[nn.Module], Any, str]] = {
    "caffenet": (CaffeNet, CaffeNetConfig, "classifier"),
    "generator": (Generator, GeneratorConfig, "generator"),
}


@dataclasses.dataclass(frozen=True)
class Model:
    """A network with its parameters: ``model(x, taps)`` runs it, ``model.apply(params, x, taps)`` is pure.

    ``module`` is a Flax module (CaffeNet, Generator) or a ``PrototxtNet`` built from a deploy prototxt.
    """

    architecture: str
    module: nn.Module
    params: Mapping[str, Any]
    metadata: Mapping[str, Any]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-example input shape: (H, W, C) for a classifier, (code_size,) for a generator."""
        if not isinstance(self.module, nn.Module):
            return tuple(self.module.input_shape)
        cfg = self.module.config
        if hasattr(cfg, "input_size"):
            return (cfg.input_size, cfg.input_size, cfg.in_channels)
        return (cfg.code_size,)

    @property
    def config(self) -> Any:
        """The architecture's config dataclass (sizes of the network), None for prototxt-built ones."""
        return getattr(self.module, "config", None)

    def apply(self, params: Mapping[str, Any], x: jax.Array, taps: Sequence[str] | None = None,
              **kwargs: Any) -> dict[str, jax.Array]:
        """Pure forward pass with explicit ``params`` (the form to use under ``jax.jit``/``jax.grad``)."""
        if not isinstance(self.module, nn.Module):
            return self.module.apply(params, x, None if taps is None else tuple(taps))
        if taps is None:
            return self.module.apply({"params": params}, x, **kwargs)
        return self.module.apply({"params": params}, x, tuple(taps), **kwargs)

    def __call__(self, x: jax.Array, taps: Sequence[str] | None = None, **kwargs: Any) -> dict[str, jax.Array]:
        return self.apply(self.params, x, taps, **kwargs)


def embedded_dir(architecture: str) -> pathlib.Path:
    """Folder of the embedded default model of ``architecture`` inside the installed package."""
    _check_architecture(architecture)
    folder = ARCHITECTURES[architecture][2]
    return pathlib.Path(str(importlib.resources.files("jaxviz") / "data" / "embedded" / folder))


def load(architecture: str, model_dir: str | os.PathLike | None = None) -> Model:
    """The ``architecture`` ("caffenet" or "generator") with weights from ``model_dir`` (default: embedded)."""
    _check_architecture(architecture)
    folder = embedded_dir(architecture) if model_dir is None else pathlib.Path(model_dir)
    params, card = checkpoint.restore(folder)
    if card.get("architecture") != architecture:
        raise checkpoint.CheckpointError(
            f"{folder} holds a {card.get('architecture')!r} model, not {architecture!r}")
    module_cls, config_cls, _ = ARCHITECTURES[architecture]
    config = config_cls.from_dict(card.get("config", {}))
    params = jax.tree_util.tree_map(jax.numpy.asarray, params)
    return Model(architecture, module_cls(config), params, card)


def load_caffe(prototxt: str | os.PathLike, caffemodel: str | os.PathLike | None = None,
               **kwargs: Any) -> Model:
    """Any supported Caffe network from its deploy prototxt (and weights), as a ``Model``."""
    from jaxviz.models.from_prototxt import from_caffe

    net, params = from_caffe(prototxt, caffemodel, **kwargs)
    metadata = {"architecture": "prototxt", "prototxt": str(prototxt),
                "caffemodel": None if caffemodel is None else str(caffemodel)}
    return Model("prototxt", net, params, metadata)


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)} "
                         f"(other Caffe networks: jaxviz.models.from_caffe(prototxt, caffemodel))")
