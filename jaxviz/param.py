"""Parameterizations: what the optimizer moves, and how it becomes the image the network sees.

A parameterization has ``init(key, n) -> z`` (the variable for ``n`` images) and
``render(aux_params, z) -> images`` (NHWC, network input space). ``aux_params`` are the parameters of
anything the rendering needs — the generator's weights for ``GeneratorCode`` — passed as an argument so
that compiled functions take them as inputs rather than baking them in as constants.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from jaxviz.models.generator import Generator, crop_to_classifier
from jaxviz.param_fourier import FourierImage, fourier_image_for  # noqa: F401  (the modern libraries' default)


class Parameterization(Protocol):
    """The optimized variable and its rendering into images."""

    is_code: bool

    def init(self, key: jax.Array, n: int) -> jax.Array: ...

    def render(self, aux_params: Any, z: jax.Array) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class Pixels:
    """The image itself, in Caffe space; starts at ``init_mean + init_std * N(0, 1)``.

    With the mean subtracted, ``init_mean=0`` is the mean image, the start of Yosinski et al. 2015.
    """

    shape: tuple[int, int, int]  # H, W, C
    init_std: float = 1.0
    init_mean: float = 0.0
    is_code: bool = False

    def init(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` starting images."""
        return self.init_mean + self.init_std * jax.random.normal(key, (n, *self.shape), jnp.float32)

    def render(self, aux_params: Any, z: jax.Array) -> jax.Array:
        """The pixels are the image."""
        return z


@dataclasses.dataclass(frozen=True)
class GeneratorCode:
    """A generator code ``h``; the image is ``crop(G(h))`` (DGN-AM). ``aux_params`` are G's weights."""

    generator: Generator
    init_std: float = 1.0   # DGN-AM starts at h ~ N(0, 1)
    init_mean: float = 0.0
    crop: bool = True
    is_code: bool = True

    @property
    def code_size(self) -> int:
        """Length of the code vector."""
        return self.generator.config.code_size

    def init(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` starting codes."""
        return self.init_mean + self.init_std * jax.random.normal(key, (n, self.code_size), jnp.float32)

    def render(self, aux_params: Any, z: jax.Array) -> jax.Array:
        """``crop(G(z))``, in the classifier's input space."""
        image = self.generator.apply({"params": aux_params}, z, ("deconv0",))["deconv0"]
        return crop_to_classifier(image, self.generator.config) if self.crop else image
