"""Directions in activation space: the dot product with a vector, and dot times cosine to a power.

Pure array math on ``(batch, features)`` activations; ``objectives.direction``, ``direction_cosine`` and
``caricature`` wrap it as objectives. Maximizing the dot product alone lets an image win by growing
every feature; multiplying by the cosine (raised to a power) makes the angle matter too while still
pushing far along the direction (Lucid issue #116, Lucid's ``_dot_cossim``; Horama's and Xplique's
"cosine similarity" objective). The cosine is floored (Lucid uses 0.1) so that a negative dot times a
negative cosine cannot score as a positive, and a zero cosine cannot stall the gradient.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

COSINE_FLOOR = 0.1   # Lucid's floor on the cosine before it is raised to a power
EPS = 1e-4           # keeps the cosine finite at zero activations (Lucid's value)


def flatten(a: jax.Array) -> jax.Array:
    """(batch, ...) -> (batch, features): one vector per image (a whole layer, every position and channel)."""
    return a.reshape(a.shape[0], -1)


def dot(a: jax.Array, v: jax.Array) -> jax.Array:
    """(batch,) dot products of each row of ``a`` with ``v`` (one vector, or one per row)."""
    return jnp.sum(a * v, axis=-1)


def cosine(a: jax.Array, v: jax.Array, eps: float = EPS) -> jax.Array:
    """(batch,) cosine similarities of each row of ``a`` with ``v``, kept finite at zero."""
    norm_a = jnp.sqrt(jnp.sum(a * a, axis=-1))
    norm_v = jnp.sqrt(jnp.sum(v * v, axis=-1))
    return dot(a, v) / ((eps + norm_a) * (eps + norm_v))


def dot_cosine(a: jax.Array, v: jax.Array, power: float = 1.0, floor: float = COSINE_FLOOR) -> jax.Array:
    """(batch,) ``dot(a, v) * max(cos(a, v), floor) ** power``; power 0 is the plain dot product."""
    return dot(a, v) * jnp.maximum(cosine(a, v), floor) ** power


def check_vector(vector: Any, width: int, layer: str) -> jax.Array:
    """The direction as an array of the layer's width, or a clear error (shapes are static under jit)."""
    v = jnp.asarray(vector, jnp.float32)
    if v.shape[-1:] != (width,):
        raise ValueError(f"a direction in layer {layer!r} needs {width} components; got an array of shape {v.shape}")
    return v


def check_reference(reference: jax.Array, acts: jax.Array, layer: str) -> jax.Array:
    """Reference activations that match the layer's per-image shape (one for all images, or one each)."""
    ref = jnp.asarray(reference, jnp.float32)
    if ref.shape[1:] != acts.shape[1:] or ref.shape[0] not in (1, acts.shape[0]):
        raise ValueError(f"reference activations of shape {ref.shape} do not match layer {layer!r} of shape "
                         f"{acts.shape} (one reference for every image, or one per image)")
    return ref


def reference_activations(net: Any, x: jax.Array, layer: str) -> jax.Array:
    """A layer's activations of real inputs ``x`` (a batch), computed once: a caricature's reference."""
    return net.function(net.params, jnp.asarray(x, jnp.float32), (layer,))[layer]


__all__ = ["COSINE_FLOOR", "EPS", "flatten", "dot", "cosine", "dot_cosine", "check_vector", "check_reference",
           "reference_activations"]
