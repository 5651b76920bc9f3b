"""Pieces shared by the training scripts: data-dependent init, augmentation, batching, timing."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, Any]
# apply(params, x, taps) -> {tap: array}: the forward pass the init probes
ApplyFn = Callable[[Params, jax.Array, tuple[str, ...]], dict[str, jax.Array]]


def data_dependent_init(apply: ApplyFn, params: Params, x: jax.Array,
                        layers: Sequence[tuple[str, str, float]]) -> Params:
    """Rescale each layer's kernel, in order, so the tap it feeds has the given standard deviation on ``x``.

    ``layers`` holds (param name, tap holding that layer's raw output, target std). Caffe-style N(0, 0.01)
    init lets the signal shrink or grow layer by layer (Caffe-space inputs have std ~80); equalizing the
    scale first (LSUV-style) lets Adam train every layer at one learning rate. Biases start at zero.
    """
    params = jax.tree_util.tree_map(jnp.asarray, dict(params))
    for name, tap, target in layers:
        out = apply(params, x, (tap,))[tap]
        layer = dict(params[name])
        layer["kernel"] = layer["kernel"] * (target / (jnp.std(out) + 1e-8))
        layer["bias"] = jnp.zeros_like(layer["bias"])
        params[name] = layer
    return params


def random_shift(key: jax.Array, x: jax.Array, max_shift: int, background: float) -> jax.Array:
    """Translate each NHWC image by up to ``max_shift`` pixels, filling with ``background``."""
    if max_shift == 0:
        return x
    n, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)),
                     constant_values=background)
    offsets = jax.random.randint(key, (n, 2), 0, 2 * max_shift + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    return jax.vmap(crop)(padded, offsets)


def batch_indices(n: int, batch_size: int, steps: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """``steps`` batches of indices drawn epoch by epoch without replacement (reshuffled each epoch)."""
    order = np.array([], dtype=np.int64)
    for _ in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(n)])
        idx, order = order[:batch_size], order[batch_size:]
        yield idx


def batched(fn: Callable[[Params, jax.Array], Any], params: Params, x: np.ndarray,
            batch_size: int = 500) -> np.ndarray:
    """``fn(params, chunk)`` over ``x`` in fixed-size chunks (the last padded) so one compile serves all."""
    outs = []
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        outs.append(np.asarray(fn(params, jnp.asarray(chunk)))[:batch_size - pad])
    return np.concatenate(outs)


def param_count(params: Params) -> int:
    """Number of scalars in a params tree."""
    return int(sum(np.size(a) for a in jax.tree_util.tree_leaves(params)))
