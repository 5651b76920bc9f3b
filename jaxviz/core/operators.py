"""Operators: what a method does to the optimized variable between steps (blur, decay, clipping).

Operators are applied to the variable after every update, in order, like an optax ``chain``:
``z <- op(z, ctx)``. They are pure functions of traced arrays (the step included), so they run inside
``jit``, ``vmap`` and ``lax.scan``.

Settings from the papers, in these terms:

- Yosinski et al. 2015, Table 1 set 3: ``chain(decay(1e-4), gaussian_blur(1.0, every=4))``; set 4:
  ``chain(gaussian_blur(0.5, every=4), clip_contribution_percentile(90))``.
- DGN-AM: ``chain(clip_code(0, bounds), decay(0.01))`` (clip, then multiply by 0.99).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.core.objectives import require_image


class OperatorContext(NamedTuple):
    """What an operator may read besides the variable: the step, a PRNG key, the objective's gradient."""

    step: jax.Array          # int32 scalar, 0-based
    key: jax.Array           # PRNG key private to this step and operator chain
    grad: jax.Array          # d objective / d z at the step's forward pass (ascent direction)


Operator = Callable[[jax.Array, OperatorContext], jax.Array]


def chain(*operators: Operator) -> Operator:
    """Apply ``operators`` in order (each gets its own PRNG key)."""
    def apply(z: jax.Array, ctx: OperatorContext) -> jax.Array:
        keys = jax.random.split(ctx.key, max(len(operators), 1))
        for op, key in zip(operators, keys):
            z = op(z, ctx._replace(key=key))
        return z
    return apply



def decay(rate: float) -> Operator:
    """``z <- (1 - rate) z``: DGN-AM's "multiply by 0.99" is ``decay(0.01)``, Yosinski's set 3 ``decay(1e-4)``."""
    factor = 1.0 - rate

    def op(z: jax.Array, ctx: OperatorContext) -> jax.Array:
        return z * jnp.asarray(factor, z.dtype)
    return op


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalized 1-D Gaussian taps of radius ``int(truncate * sigma + 0.5)``, as scipy.ndimage builds them."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).astype(np.float32)


def _blur_axis(x: jax.Array, taps: np.ndarray, axis: int) -> jax.Array:
    radius = (len(taps) - 1) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    # numpy's "symmetric" repeats the edge sample (d c b a | a b c d): scipy.ndimage's "reflect".
    xp = jnp.pad(x, pad, mode="symmetric")
    size = x.shape[axis]
    out = jnp.zeros_like(x)
    for k, w in enumerate(taps):
        out = out + jnp.asarray(w, x.dtype) * jax.lax.slice_in_dim(xp, k, k + size, axis=axis)
    return out


@functools.partial(jax.jit, static_argnums=(1, 2))
def _blur(x: jax.Array, sigma: float, truncate: float) -> jax.Array:
    # Compiled once per (shape, sigma): the unrolled taps are dozens of small ops when run eagerly.
    taps = gaussian_kernel1d(sigma, truncate)
    return _blur_axis(_blur_axis(x, taps, 1), taps, 2)


def blur(x: jax.Array, sigma: float, truncate: float = 4.0) -> jax.Array:
    """Separable Gaussian blur of NHWC images over H and W, borders reflected (scipy's gaussian_filter)."""
    require_image(x, "gaussian_blur")
    if sigma <= 0:
        return x
    return _blur(x, float(sigma), float(truncate))


def gaussian_blur(sigma: float, every: int = 1, truncate: float = 4.0) -> Operator:
    """Blur the images on steps where ``step % every == 0`` (Yosinski et al.; sigma 0 or every 0: identity).

    Yosinski et al.'s code calls ``scipy.ndimage.gaussian_filter(channel, sigma)`` per channel: taps out
    to ``int(4 sigma + 0.5)`` and reflected borders, which this reproduces.
    """
    if sigma <= 0 or every <= 0:
        return lambda z, ctx: z

    def op(z: jax.Array, ctx: OperatorContext) -> jax.Array:
        if every == 1:
            return blur(z, sigma, truncate)
        return jax.lax.cond(ctx.step % every == 0, lambda v: blur(v, sigma, truncate), lambda v: v, z)
    return op


def _bound(value: Any) -> np.ndarray | None:
    return None if value is None else np.asarray(value, np.float32)


def clip_value(low: Any = None, high: Any = None) -> Operator:
    """Clip to ``[low, high]``: scalars, or per-channel arrays broadcast over the last axis (None: unbounded)."""
    lo, hi = _bound(low), _bound(high)

    def op(z: jax.Array, ctx: OperatorContext) -> jax.Array:
        return jnp.clip(z, lo, hi)
    return op


def clip_code(lower: Any, upper: Any) -> Operator:
    """Clip each code unit to ``[lower_j, upper_j]`` (arrays of shape (units,) or scalars); DGN-AM: [0, ub_j]."""
    lo, hi = _bound(lower), _bound(upper)

    def op(z: jax.Array, ctx: OperatorContext) -> jax.Array:
        for name, b in (("lower", lo), ("upper", hi)):
            if b is not None and b.ndim and b.shape != z.shape[-1:]:
                raise ValueError(f"clip_code {name} bounds have shape {b.shape}; the code has {z.shape[-1]} units")
        return jnp.clip(z, lo, hi)
    return op


def _zero_below_percentile(z: jax.Array, score: jax.Array, pct: float) -> jax.Array:
    # score: (N, H, W), one value per pixel; the percentile is each image's own (numpy's linear rule).
    flat = score.reshape(score.shape[0], -1)
    threshold = jnp.percentile(flat, pct, axis=1).reshape(-1, 1, 1)
    return jnp.where((score < threshold)[..., None], jnp.zeros_like(z), z)


def _percentile_clip(name: str, pct: float, score: Callable[[jax.Array, OperatorContext], jax.Array]) -> Operator:
    """An operator zeroing, per image, the pixels whose ``score`` is below the ``pct``-th percentile."""
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {pct}")

    def op(z: jax.Array, ctx: OperatorContext) -> jax.Array:
        require_image(z, name)
        if pct == 0:
            return z
        return _zero_below_percentile(z, score(z, ctx), pct)
    return op


def clip_norm_percentile(pct: float) -> Operator:
    """Zero the pixels whose L2 norm across channels is below the ``pct``-th percentile of their image's."""
    return _percentile_clip("clip_norm_percentile", pct,
                            lambda z, ctx: jnp.sqrt(jnp.sum(jnp.square(z), axis=-1)))


def clip_contribution_percentile(pct: float) -> Operator:
    """Zero the pixels whose ``|sum_c x * grad|`` is below the ``pct``-th percentile of their image's.

    ``x * grad`` is the first-order change of the objective if the pixel were set to zero (Yosinski et
    al. 2015's "absolute contribution" criterion); ``grad`` is the step's gradient from the context.
    """
    return _percentile_clip("clip_contribution_percentile", pct,
                            lambda z, ctx: jnp.abs(jnp.sum(z * ctx.grad, axis=-1)))


__all__ = [
    "OperatorContext", "Operator", "chain", "decay", "gaussian_kernel1d", "blur", "gaussian_blur", "clip_value",
    "clip_code", "clip_norm_percentile", "clip_contribution_percentile",
]
