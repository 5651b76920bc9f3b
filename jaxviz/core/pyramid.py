"""Lucid's Laplacian pyramid and low-resolution images (``lucid.optvis.param``: ``laplacian_pyramid``,
``lowres_tensor``): the image is a sum of low-resolution tensors, each upsampled to the full size.

``PyramidImage`` holds the levels' sizes; ``laplacian_pyramid`` makes Lucid's levels (full size, 1/2,
1/4, ... : ``(H // 2^k, W // 2^k)``) and ``lowres_image`` a single coarse level. Upsampling is bilinear
with half-pixel centres (``jax.image.resize``; Lucid's TF1 ``resize_bilinear`` aligns the grids at the
top-left pixel instead), so every coarse level is smooth by construction. The sum is mapped from the
decorrelated colour basis to colours (``jaxviz.core.colour``), through a sigmoid, into the network's
input space like ``FourierImage``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxviz.core.colour import channel_mean, check_per_channel, colour_matrix, freeze_matrix, sigmoid_to_input


@dataclasses.dataclass(frozen=True)
class PyramidImage:
    """An image as the sum of upsampled low-resolution levels; ``z`` is (n, all levels' values, flat)."""

    height: int
    width: int
    channels: int
    levels: tuple[tuple[int, int], ...]     # each level's (height, width), finest first
    sd: float = 0.01                        # Lucid's lowres_tensor default start
    mean: tuple[float, ...] | None = None   # subtracted in the network's channel order (None: zero)
    pixel_scale: float = 255.0              # colours in [0, 1] times this
    bgr: bool = True                        # 3 channels: flip RGB to the network's BGR order
    offset: tuple[float, ...] = (0.0,)      # before the sigmoid: the start colour is sigmoid(offset)
    decorrelate: bool = True                # map the sum through the colour matrix
    colour_matrix: tuple[float, ...] | None = None  # C x C, row-major; None: Lucid's (3 ch.) or identity
    is_code: bool = False

    def __post_init__(self) -> None:
        levels = tuple((int(h), int(w)) for h, w in self.levels)
        if not levels or any(h < 1 or w < 1 or h > self.height or w > self.width for h, w in levels):
            raise ValueError(f"levels must be sizes between 1x1 and {self.height}x{self.width}, got {levels}")
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "mean", check_per_channel("mean", self.mean, self.channels))
        object.__setattr__(self, "offset", check_per_channel("offset", self.offset, self.channels))
        object.__setattr__(self, "colour_matrix", freeze_matrix(self.colour_matrix, self.channels))

    @property
    def num_params(self) -> int:
        """How many numbers one image's levels hold together."""
        return sum(h * w * self.channels for h, w in self.levels)

    def split(self, z: jax.Array) -> list[jax.Array]:
        """(n, num_params) -> each level as (n, h, w, C)."""
        out, at = [], 0
        for h, w in self.levels:
            size = h * w * self.channels
            out.append(z[:, at: at + size].reshape(z.shape[0], h, w, self.channels))
            at += size
        return out

    def init(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` starting variables, ``sd * N(0, 1)``."""
        return self.sd * jax.random.normal(key, (n, self.num_params), jnp.float32)

    def colour_space(self, z: jax.Array) -> jax.Array:
        """(n, H, W, C) sum of the bilinearly upsampled levels, before the colour mapping."""
        shape = (z.shape[0], self.height, self.width, self.channels)
        return sum(jax.image.resize(level, shape, method="linear") for level in self.split(z))

    def render(self, aux_params: Any, z: jax.Array) -> jax.Array:
        """(n, H, W, C) images in the network's input space; ``aux_params`` is unused."""
        t = self.colour_space(z)
        if self.decorrelate:
            t = t @ jnp.asarray(colour_matrix(self.colour_matrix, self.channels).T)
        return sigmoid_to_input(t, self.offset, self.bgr, self.pixel_scale, channel_mean(self.mean, self.channels))


def laplacian_pyramid(height: int, width: int, channels: int = 3, n_levels: int = 4, **kwargs: Any) -> PyramidImage:
    """Lucid's ``laplacian_pyramid``: levels ``(H // 2^k, W // 2^k)`` for k < ``n_levels`` (at least 1x1)."""
    levels = tuple((max(height // 2 ** k, 1), max(width // 2 ** k, 1)) for k in range(n_levels))
    return PyramidImage(height, width, channels, levels, **kwargs)


def lowres_image(height: int, width: int, low_height: int, low_width: int, channels: int = 3,
                 **kwargs: Any) -> PyramidImage:
    """Lucid's ``lowres_tensor`` as an image: one ``low_height x low_width`` level upsampled to full size."""
    return PyramidImage(height, width, channels, ((low_height, low_width),), **kwargs)


__all__ = ["PyramidImage", "laplacian_pyramid", "lowres_image"]
