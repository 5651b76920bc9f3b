"""Parameterizations: what the optimizer moves, and how it becomes the image the network sees.

A parameterization has ``init(key, n) -> z`` (the variable for ``n`` images) and
``render(aux_params, z) -> images`` (NHWC, network input space). ``aux_params`` are the parameters of
anything the rendering needs (a generator's weights for ``GeneratorCode``), passed as an argument so
that compiled functions take them as inputs rather than baking them in as constants. Every
parameterization is a frozen record compared by value, so equal ones share one compilation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.core.fourier import FourierImage

Render = Callable[[Any, jax.Array], jax.Array]  # (generator params, codes) -> images


class Parameterization(Protocol):
    """The optimized variable and its rendering into images."""

    is_code: bool

    def init(self, key: jax.Array, n: int) -> jax.Array: ...

    def render(self, aux_params: Any, z: jax.Array) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class Pixels:
    """The image itself, in network space; starts at ``init_mean + init_std * N(0, 1)``.

    With a mean-subtracted network, ``init_mean=0`` is the mean image, the start of Yosinski et al. 2015.
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
class BoundedPixels:
    """Pixels starting at ``init_mean + init_std N(0,1)`` clipped to ``[low, high]`` (scalars or per pixel)."""

    shape: tuple[int, int, int]
    init_std: float
    low: Any = None    # stored as nested tuples (see __post_init__): hashable, compared by value
    high: Any = None
    init_mean: float = 0.0
    is_code: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "low", _freeze(self.low))
        object.__setattr__(self, "high", _freeze(self.high))

    def init(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` starting images, inside the valid pixel range."""
        x = self.init_mean + self.init_std * jax.random.normal(key, (n, *self.shape), jnp.float32)
        return jnp.clip(x, _thaw(self.low), _thaw(self.high))

    def render(self, aux_params: Any, z: jax.Array) -> jax.Array:
        """The pixels are the image."""
        return z


@dataclasses.dataclass(frozen=True)
class NormalizedNoise:
    """Gaussian noise images rescaled to Euclidean norm ``norm`` each (Mahendran & Vedaldi's start)."""

    shape: tuple[int, int, int]
    norm: float
    is_code: bool = False

    def init(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` starting images of norm ``self.norm``."""
        x = jax.random.normal(key, (n, *self.shape), jnp.float32)
        return x * (self.norm / jnp.sqrt(jnp.sum(jnp.square(x), axis=(1, 2, 3), keepdims=True)))

    def render(self, aux_params: Any, z: jax.Array) -> jax.Array:
        """The pixels are the image."""
        return z


@dataclasses.dataclass(frozen=True)
class GeneratorCode:
    """A generator code ``h``; the image is ``render(aux_params, h)`` (DGN-AM: crop(G(h))).

    ``render`` is any pure function of the generator's parameters (``aux_params``) and a batch of codes;
    ``jaxviz.recipes.generator_render`` builds it for a generator ``Model``.
    """

    render_fn: Render
    code_size: int
    init_std: float = 1.0   # DGN-AM starts at h ~ N(0, 1)
    init_mean: float = 0.0
    is_code: bool = True

    def init(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` starting codes."""
        return self.init_mean + self.init_std * jax.random.normal(key, (n, self.code_size), jnp.float32)

    def render(self, aux_params: Any, z: jax.Array) -> jax.Array:
        """The generator's image of each code, in the classifier's input space."""
        return self.render_fn(aux_params, z)


def _freeze(value: Any) -> Any:
    if value is None or isinstance(value, (int, float)):
        return value
    a = np.asarray(value, np.float32)
    return float(a) if a.ndim == 0 else _Frozen(a.shape, tuple(a.ravel().tolist()))


def _thaw(value: Any) -> Any:
    if value is None or isinstance(value, (int, float)):
        return value
    return np.asarray(value.values, np.float32).reshape(value.shape)


class _Frozen(tuple):
    """An array as (shape, values): hashable and equal by value."""

    def __new__(cls, shape: tuple[int, ...], values: tuple[float, ...]):
        return super().__new__(cls, (tuple(shape), values))

    @property
    def shape(self) -> tuple[int, ...]:
        return self[0]

    @property
    def values(self) -> tuple[float, ...]:
        return self[1]


__all__ = ["Parameterization", "Pixels", "BoundedPixels", "NormalizedNoise", "GeneratorCode", "FourierImage",
           "Render"]
