"""Interpolation across a run's batch of images: mixing weights and the neighbour-alignment penalty.

Pure array math on activations whose first axis is the images of one run (``Method.images_per_run``);
``objectives.channel_interpolate`` and ``objectives.alignment`` wrap it. Image i of n mixes two units
with weight ``t_i = i / (n - 1)``; the alignment penalty keeps neighbouring images' activations close so
the sequence changes smoothly (Lucid's ``channel_interpolate`` and ``alignment``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MAX_DISTANCE = 4  # Lucid compares each image with its next four neighbours


def interpolation_weights(n: int) -> jax.Array:
    """(n,) weights ``t_i = i / (n - 1)`` from 0 to 1 (a batch of one has t = 0)."""
    return jnp.arange(n, dtype=jnp.float32) / max(n - 1, 1)


def interpolate(values_a: jax.Array, values_b: jax.Array) -> jax.Array:
    """(n,) per image ``(1 - t_i) * a_i + t_i * b_i``: the first image is all a, the last all b."""
    t = interpolation_weights(values_a.shape[0])
    return (1.0 - t) * values_a + t * values_b


def neighbour_penalty(acts: jax.Array, decay_ratio: float = 2.0, max_distance: int = MAX_DISTANCE) -> jax.Array:
    """``sum_d sum_i mean((a_i - a_{i+d})**2) / decay_ratio**d`` over d = 1..max_distance: a scalar >= 0."""
    total = jnp.zeros((), jnp.float32)
    # d is a Python int: the batch size is static, so the slices are too.
    for d in range(1, min(max_distance, acts.shape[0] - 1) + 1):
        diff = acts[d:] - acts[:-d]
        total = total + jnp.mean(jnp.square(diff), axis=tuple(range(1, acts.ndim))).sum() / decay_ratio ** d
    return total


__all__ = ["MAX_DISTANCE", "interpolation_weights", "interpolate", "neighbour_penalty"]
