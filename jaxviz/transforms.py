"""Robustness transforms applied to the image before each forward pass: pure functions of a PRNG key.

A ``Transform`` maps ``(key, images NHWC) -> images NHWC`` of the same shape (fixed-size networks such as
CaffeNet cannot take another size), differentiable with respect to the images.
"""

from __future__ import annotations

from typing import Callable

import jax

Transform = Callable[[jax.Array, jax.Array], jax.Array]


def compose(*transforms: Transform) -> Transform:
    """Apply ``transforms`` in order, each with its own key."""
    def apply(key: jax.Array, x: jax.Array) -> jax.Array:
        for t, k in zip(transforms, jax.random.split(key, max(len(transforms), 1))):
            x = t(k, x)
        return x
    return apply
