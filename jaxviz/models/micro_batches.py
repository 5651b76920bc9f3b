"""A layer computed over parts of its batch: the same sums, scheduled so that XLA:CPU uses every core.

XLA:CPU runs one convolution of some shapes on a single core (CaffeNet's conv1, the generator's large
stride-2 deconvolutions: about one core busy, measured by process time against wall time), yet it runs
the independent operations of one program concurrently. Cut into parts of two to four examples, such a
layer keeps both cores of a small machine busy and its working set in cache: at batch 8 the pixel step
is 10 % faster and the DGN-AM step 14 %, and a sweep's DGN-AM loop 11-14 % (benchmarks/README.md).

The runs of a sweep are ``vmap``-ped, so inside the network each run is a batch of one; the parts are
therefore cut where ``vmap`` folds the runs into the batch (``jax.custom_batching.custom_vmap``), in the
forward pass and in the backward pass (a ``jax.custom_vjp``). The same folding serves a layer whose best
form depends on the batch (``parts=whole``: not cut, but the layer sees the batch of all the runs, not the
batch of one each run has under ``vmap``). Reverse mode only, like max pooling's
default form. Under ``vmap`` with weights shared by the runs, the weights' cotangent is returned per run,
as ``vmap`` of a gradient is; XLA drops it when only the input's gradient is used.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap

EXAMPLES_PER_PART = 2
MAX_PARTS = 8

Layer = Callable[[jax.Array, jax.Array], jax.Array]
Parts = Callable[[int], int]   # batch size -> how many equal parts it is cut into


def batch_parts(n: int) -> int:
    """How many equal parts a batch of ``n`` examples is cut into (1: not cut): parts of about two."""
    parts = min(MAX_PARTS, n // EXAMPLES_PER_PART)
    while parts > 1 and n % parts:
        parts -= 1
    return max(parts, 1)


def whole(n: int) -> int:
    """One part: the batch is not cut (``micro_batched(layer, whole)`` only folds ``vmap``'s runs in)."""
    return 1


def _forward_in_parts(layer: Layer, x: jax.Array, w: jax.Array, parts_of: Parts) -> jax.Array:
    parts = parts_of(x.shape[0])
    if parts == 1:
        return layer(x, w)
    return jnp.concatenate([layer(p, w) for p in jnp.split(x, parts)])


def _vjp_in_parts(layer: Layer, x: jax.Array, w: jax.Array, g: jax.Array,
                  parts_of: Parts) -> tuple[jax.Array, jax.Array]:
    """(input cotangent, weight cotangent) of ``layer`` at (x, w) for output cotangent ``g``, by parts."""
    parts = parts_of(x.shape[0])
    pieces = [jax.vjp(layer, xp, w)[1](gp) for xp, gp in zip(jnp.split(x, parts), jnp.split(g, parts))]
    return jnp.concatenate([dx for dx, _ in pieces]), sum(dw for _, dw in pieces)


def _fold(a: jax.Array) -> jax.Array:
    return a.reshape(-1, *a.shape[2:])


def micro_batched(layer: Layer, parts: Parts = batch_parts) -> Layer:
    """``layer(x, w)`` (x with a leading batch axis, w its weights) computed over ``parts(n)`` parts of its
    batch of ``n``, also of the batch ``vmap`` makes; values equal to ``layer``'s up to float reassociation."""

    @custom_vmap
    def forward(x, w):
        return _forward_in_parts(layer, x, w, parts)

    @forward.def_vmap
    def _forward_vmap(axis_size, in_batched, x, w):
        x_batched, w_batched = in_batched
        if w_batched or not x_batched:  # weights per run: nothing shared to cut across
            return jax.vmap(layer, (0 if x_batched else None, 0 if w_batched else None))(x, w), True
        y = _forward_in_parts(layer, _fold(x), w, parts)
        return y.reshape(x.shape[:2] + y.shape[1:]), True

    @custom_vmap
    def backward(x, w, g):
        return _vjp_in_parts(layer, x, w, g, parts)

    @backward.def_vmap
    def _backward_vmap(axis_size, in_batched, x, w, g):
        x_batched, w_batched, g_batched = in_batched
        if w_batched or not (x_batched and g_batched):
            axes = tuple(0 if b else None for b in in_batched)
            return jax.vmap(lambda *a: _vjp_in_parts(layer, *a, parts), axes)(x, w, g), (True, True)
        dx, _ = _vjp_in_parts(layer, _fold(x), w, _fold(g), parts)   # the summed weight cotangent: dead code
        dw = jax.vmap(lambda xi, gi: jax.vjp(lambda k: layer(xi, k), w)[1](gi)[0])(x, g)  # dead code when unused
        return (dx.reshape(x.shape[:2] + dx.shape[1:]), dw), (True, True)

    @jax.custom_vjp
    def apply(x, w):
        return forward(x, w)

    apply.defvjp(lambda x, w: (forward(x, w), (x, w)), lambda res, g: backward(*res, g))
    return apply


__all__ = ["EXAMPLES_PER_PART", "MAX_PARTS", "batch_parts", "micro_batched", "whole"]
