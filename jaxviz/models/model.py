"""``Model``: a network with its parameters and its card, and the one adapter to a pure function."""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np

from jaxviz.models import shipped
from jaxviz.models.caffenet import CaffeNet, caffenet_tap_names
from jaxviz.models.generator import Generator, generator_tap_names
from jaxviz.models.lenet import LeNet, lenet_tap_names

NetFunction = Callable[[Any, jax.Array, Sequence[str]], dict]


@functools.lru_cache(maxsize=None)
def network_function(module: Any) -> NetFunction:
    """A stable pure ``(params, x, taps) -> acts`` per network, so compiled runs are reused across calls.

    ``module`` is a Flax module, or any object whose ``apply(params, x, taps)`` is already pure (a network
    built from a Caffe prototxt).
    """
    if not isinstance(module, nn.Module):
        return module.apply

    def apply(params: Any, x: jax.Array, taps: Sequence[str]) -> dict:
        return module.apply({"params": params}, x, tuple(taps))
    return apply


@dataclasses.dataclass(frozen=True)
class Model:
    """A network with its parameters: ``model(x, taps)`` runs it, ``model.apply(params, x, taps)`` is pure."""

    architecture: str              # "caffenet", "generator", "prototxt", ...
    module: Any                    # a Flax module, or an object with a pure apply(params, x, taps)
    params: Mapping[str, Any]      # the weights, a pytree of arrays
    metadata: Mapping[str, Any]    # the model card (architecture, config, preprocessing, code, source)
    folder: pathlib.Path | None = None  # where it was loaded from (None: built in memory)

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

    @property
    def tap_names(self) -> tuple[str, ...]:
        """Every layer name a forward pass can return, in forward order (empty when the network names none)."""
        cfg = getattr(self.module, "config", None)
        if isinstance(self.module, CaffeNet):
            return caffenet_tap_names(cfg)
        if isinstance(self.module, Generator):
            return generator_tap_names(cfg)
        if isinstance(self.module, LeNet):
            return lenet_tap_names(cfg)
        return tuple(getattr(self.module, "tap_names", ()))

    @property
    def function(self) -> NetFunction:
        """The pure ``(params, x, taps) -> acts`` of this network (one per module, reused by compiled runs)."""
        return network_function(self.module)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The card's input space (channel order, pixel scale, mean); empty when the card names none."""
        return dict(self.metadata.get("preprocessing") or {})

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


def code_layer(generator: Model) -> str:
    """The classifier layer whose activations are ``generator``'s codes (fc6 unless its config says)."""
    return getattr(generator.config, "code_layer", "fc6")


def code_bounds(generator: Model) -> np.ndarray:
    """Per-unit upper bounds of a generator's code, by one rule.

    The card's ``code.bounds`` when it lists them; else the file its ``code.bounds_file`` names, relative
    to the folder the model was loaded from; else DGN-AM's released bounds for the generator's code layer
    (CaffeNet fc6, fc7, fc8 or pool5) when the code has that layer's size. Anything else is an error that
    says how to pass bounds.
    """
    size = int(generator.config.code_size)
    card = dict(generator.metadata.get("code") or {})
    if isinstance(card.get("bounds"), (list, tuple)):
        return check_code_bounds(card["bounds"], size)
    name = card.get("bounds_file")
    if name and generator.folder is not None:
        path = pathlib.Path(generator.folder) / name
        if not path.is_file():
            raise ValueError(f"the generator's card names code bounds {name!r}, but {path} does not exist")
        return check_code_bounds(np.load(path), size)
    layer = code_layer(generator)
    if shipped.DGN_AM_BOUNDS_SIZES.get(layer) == size:
        return shipped.dgn_am_bounds(layer)
    raise ValueError(f"no code bounds known for this generator (code size {size}): its card names none; pass "
                     f"bounds= explicitly (DGN-AM: 3 standard deviations of each encoder unit over real images, "
                     f"or one global bound such as 30)")


def check_code_bounds(bounds: Any, size: int) -> np.ndarray:
    """Bounds as float32: a scalar, or one value per code unit (a clear error otherwise)."""
    b = np.asarray(bounds, np.float32)
    if b.ndim == 1 and b.shape != (size,):
        raise ValueError(f"code bounds have {b.shape[0]} values; the generator's code has {size} units")
    if b.ndim > 1:
        raise ValueError(f"code bounds must be a scalar or one value per code unit, got shape {b.shape}")
    return b


__all__ = ["Model", "NetFunction", "network_function", "code_layer", "code_bounds", "check_code_bounds"]
