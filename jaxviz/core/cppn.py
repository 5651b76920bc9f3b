"""Lucid's CPPN image (``lucid.optvis.param.cppn``): a small network of (x, y) whose weights are optimized.

A compositional pattern-producing network maps each pixel's coordinates, on a grid from ``-sqrt(3)`` to
``sqrt(3)`` in both directions, through ``layers`` dense layers of ``hidden`` units, each followed by
Lucid's composite activation ``[atan(a) / 0.67, atan(a)^2 / 0.6]`` (so the next layer reads ``2 hidden``
values), to one value per channel; a sigmoid puts it in [0, 1] and the image goes to the network's input
space like ``FourierImage``'s. The image is a smooth function of the coordinates by construction: its
Lipschitz constant is bounded by the product of the layers' spectral norms (``lipschitz_bound``).

As in Lucid the hidden weights start at ``N(0, 1 / fan_in)``, biases at 0 and the output layer at 0 (the
first image is flat: ``sigmoid(offset)``) unless ``output_std`` is positive. All weights of one image are one flat vector, so ``z`` has shape
(n, ``num_params``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.core.colour import channel_mean, check_per_channel, sigmoid_to_input

COORD_RANGE = math.sqrt(3.0)   # Lucid's grid: linspace(-sqrt(3), sqrt(3)), unit variance per coordinate
ATAN_SCALE, SQUARE_SCALE = 0.67, 0.6
# |d/da atan(a)| <= 1 and |d/da atan(a)^2| = 2 |atan(a)| / (1 + a^2) <= 1 (its maximum is about 0.82), so
# the composite activation's Jacobian, one 2-vector per unit, has norm at most this:
ACTIVATION_LIPSCHITZ = math.sqrt((1.0 / ATAN_SCALE) ** 2 + (1.0 / SQUARE_SCALE) ** 2)


def composite_activation(a: jax.Array) -> jax.Array:
    """Lucid's CPPN activation: ``[atan(a) / 0.67, atan(a)^2 / 0.6]`` concatenated on the last axis."""
    t = jnp.arctan(a)
    return jnp.concatenate([t / ATAN_SCALE, t * t / SQUARE_SCALE], axis=-1)


@dataclasses.dataclass(frozen=True)
class CPPN:
    """An image as a CPPN of pixel coordinates (Lucid's ``cppn``: 8 layers of 24 units by default)."""

    height: int
    width: int
    channels: int = 3
    hidden: int = 24                        # units per hidden layer (each activation doubles them)
    layers: int = 8                         # hidden layers; one more dense layer gives the channels
    mean: tuple[float, ...] | None = None   # subtracted in the network's channel order (None: zero)
    pixel_scale: float = 255.0              # colours in [0, 1] times this (the card's pixel scale)
    bgr: bool = True                        # 3 channels: flip RGB to the network's BGR order
    offset: tuple[float, ...] = (0.0,)      # before the sigmoid: the first (flat) image is sigmoid(offset)
    output_std: float = 0.0                 # output weights start at N(0, output_std^2 / fan_in); Lucid: 0
    is_code: bool = False

    def __post_init__(self) -> None:
        if self.layers < 1 or self.hidden < 1:
            raise ValueError(f"a CPPN needs at least one hidden layer and unit, got {self.layers}, {self.hidden}")
        object.__setattr__(self, "mean", check_per_channel("mean", self.mean, self.channels))
        object.__setattr__(self, "offset", check_per_channel("offset", self.offset, self.channels))

    def shapes(self) -> list[tuple[tuple[int, int], int]]:
        """Each dense layer's (weight shape (fan_in, fan_out), bias size), input layer first."""
        fan_ins = [2] + [2 * self.hidden] * self.layers
        fan_outs = [self.hidden] * self.layers + [self.channels]
        return [((i, o), o) for i, o in zip(fan_ins, fan_outs)]

    @property
    def num_params(self) -> int:
        """How many numbers one image's weights and biases are."""
        return sum(i * o + b for (i, o), b in self.shapes())

    def unpack(self, w: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        """One image's flat vector -> [(weights, bias)] per layer."""
        out, at = [], 0
        for (i, o), b in self.shapes():
            out.append((w[at: at + i * o].reshape(i, o), w[at + i * o: at + i * o + b]))
            at += i * o + b
        return out

    def init(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` starting weight vectors: hidden weights ``N(0, 1/fan_in)``, output weights
        ``N(0, output_std^2/fan_in)`` (Lucid: 0), biases 0."""
        keys = jax.random.split(key, self.layers + 1)
        per_layer = []
        for k, ((i, o), b) in zip(keys, self.shapes()[:-1]):
            per_layer.append(jax.random.normal(k, (n, i * o), jnp.float32) / np.sqrt(i))
            per_layer.append(jnp.zeros((n, b), jnp.float32))
        (i, o), b = self.shapes()[-1]
        per_layer.append(self.output_std * jax.random.normal(keys[-1], (n, i * o), jnp.float32) / np.sqrt(i))
        per_layer.append(jnp.zeros((n, b), jnp.float32))
        return jnp.concatenate(per_layer, axis=1)

    def coordinates(self) -> np.ndarray:
        """(H, W, 2) pixel coordinates (y, x), each from ``-sqrt(3)`` to ``sqrt(3)``."""
        y = np.linspace(-COORD_RANGE, COORD_RANGE, self.height, dtype=np.float32)
        x = np.linspace(-COORD_RANGE, COORD_RANGE, self.width, dtype=np.float32)
        return np.stack(np.meshgrid(y, x, indexing="ij"), axis=-1)

    def field(self, w: jax.Array, coords: jax.Array) -> jax.Array:
        """One image's network at ``coords`` (..., 2): (..., C) values before the sigmoid."""
        layers = self.unpack(w)
        a = coords
        for weight, bias in layers[:-1]:
            a = composite_activation(a @ weight + bias)
        weight, bias = layers[-1]
        return a @ weight + bias

    def lipschitz_bound(self, w: jax.Array) -> jax.Array:
        """An upper bound on ``field``'s Lipschitz constant in the coordinates (l2 to l2) for one image."""
        bound = jnp.asarray(1.0, jnp.float32)
        for i, (weight, _) in enumerate(self.unpack(w)):
            bound = bound * jnp.linalg.norm(weight, ord=2) * (ACTIVATION_LIPSCHITZ if i < self.layers else 1.0)
        return bound

    def render(self, aux_params: Any, z: jax.Array) -> jax.Array:
        """(n, H, W, C) images in the network's input space; ``aux_params`` is unused."""
        coords = jnp.asarray(self.coordinates())
        t = jax.vmap(lambda w: self.field(w, coords))(z)
        return sigmoid_to_input(t, self.offset, self.bgr, self.pixel_scale, channel_mean(self.mean, self.channels))


__all__ = ["CPPN", "composite_activation", "COORD_RANGE", "ACTIVATION_LIPSCHITZ"]
