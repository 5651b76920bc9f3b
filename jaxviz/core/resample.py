"""Bilinear affine resampling about the image centre, with mirror borders and an adjoint made of gathers.

Output pixel ``p`` of an image reads the input at ``c + M (p - c) + t``, ``c`` the centre, ``t`` a
translation, bilinearly, samples outside the image reflected about the edge pixels (numpy's
``"reflect"``). This equals
``jax.scipy.ndimage.map_coordinates(..., order=1, mode="mirror")`` on each channel, but its gradient is
computed differently: autodiff of a gather is a scatter-add, which XLA:CPU runs serially (about 70 ms for
a batch of 8 images of 227x227x3, ten times the forward pass). Here the adjoint gathers instead: the output
pixels that read input pixel ``q`` lie near ``c + M^-1 (q - c - t)``, in a window whose size follows from a
bound on ``M^-1`` known in advance (the random transforms know their largest scale and angle), so each
input pixel sums its few readers' cotangents. Reverse mode only.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Reach(NamedTuple):
    """Bounds on the matrices a resampling will see, which fix its static sizes.

    Fields: ``forward``, the largest absolute row sum of ``M`` (how far past the border a sample can
    fall, per unit of distance from the centre: the reflected margin); ``inverse``, that of ``M^-1`` (how
    many output pixels can read one input pixel: the adjoint's window); ``shift``, the largest absolute
    component of a translation ``t`` in pixels (how much wider the margin must be).
    """

    forward: float
    inverse: float
    shift: float = 0.0


def reach_of(matrices: np.ndarray, shift: float = 0.0) -> Reach:
    """The ``Reach`` of every (2, 2) matrix in ``matrices`` (N, 2, 2) and of translations up to ``shift``
    pixels per axis, with a little slack for rounding."""
    m = np.asarray(matrices, np.float64).reshape(-1, 2, 2)
    forward = float(np.abs(m).sum(-1).max())
    inverse = float(np.abs(np.linalg.inv(m)).sum(-1).max())
    return Reach(forward * (1 + 1e-6), inverse * (1 + 1e-6), float(shift) * (1 + 1e-6))


def _margin(h: int, w: int, reach: Reach) -> int:
    """Reflected border wide enough that no sample of a matrix and translation within ``reach`` falls
    past it."""
    turned = max(h - 1, w - 1) / 2.0 * max(reach.forward - 1.0, 0.0)
    return int(math.ceil(turned + reach.shift)) + 2


def resample_fits(h: int, w: int, reach: Reach) -> bool:
    """Whether images of ``h`` x ``w`` can mirror the border that matrices within ``reach`` need."""
    return _margin(h, w, reach) < min(h, w)


def _window(reach: Reach) -> int:
    """Output pixels per axis that can read one input pixel: integers in an open interval of 2 x reach."""
    return int(math.ceil(2.0 * reach.inverse))


def _taps(coordinate: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """Lower tap index (clipped so both taps exist) and the upper tap's weight, for one axis."""
    coordinate = jnp.clip(coordinate, 0.0, size - 1.0)
    low = jnp.clip(jnp.floor(coordinate), 0, size - 2).astype(jnp.int32)
    return low, coordinate - low


def _sources(m: jax.Array, t: jax.Array, p_rows: jax.Array, p_cols: jax.Array, g: "_Geometry"):
    """Where output pixels ``(p_rows, p_cols)`` read, in the coordinates of the margin-padded image."""
    cy, cx = (g.h - 1) / 2.0, (g.w - 1) / 2.0
    dy, dx = p_rows - cy, p_cols - cx
    return (cy + g.margin + t[0] + m[0, 0] * dy + m[0, 1] * dx,
            cx + g.margin + t[1] + m[1, 0] * dy + m[1, 1] * dx)


class _Geometry(NamedTuple):
    """The static sizes of one resampling: output height and width, reflected margin, adjoint window."""

    h: int
    w: int
    margin: int
    window: int


def _sample_forward(padded: jax.Array, m: jax.Array, t: jax.Array, g: _Geometry) -> jax.Array:
    hp, wp, c = padded.shape
    rows, cols = jnp.meshgrid(jnp.arange(g.h, dtype=jnp.float32), jnp.arange(g.w, dtype=jnp.float32),
                              indexing="ij")
    sy, sx = _sources(m, t, rows, cols, g)
    y0, fy = _taps(sy, hp)
    x0, fx = _taps(sx, wp)
    flat = padded.reshape(hp * wp, c)
    out = jnp.zeros((g.h, g.w, c), padded.dtype)
    for ry, wy in ((0, 1.0 - fy), (1, fy)):
        for rx, wx in ((0, 1.0 - fx), (1, fx)):
            rows_read = jnp.take(flat, ((y0 + ry) * wp + (x0 + rx)).reshape(-1), axis=0)
            out = out + (wy * wx)[..., None] * rows_read.reshape(g.h, g.w, c)
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _sample(padded: jax.Array, m: jax.Array, t: jax.Array, g: _Geometry) -> jax.Array:
    return _sample_forward(padded, m, t, g)


def _tap_weight(low: jax.Array, upper_weight: jax.Array, q: jax.Array) -> jax.Array:
    """The weight with which a reader whose taps are (low, low + 1) reads index ``q`` (0 if neither)."""
    return jnp.where(q == low, 1.0 - upper_weight, 0.0) + jnp.where(q == low + 1, upper_weight, 0.0)


def _sample_fwd(padded, m, t, g):
    return _sample_forward(padded, m, t, g), (m, t)


def _sample_bwd(g, residuals, cotangent):
    m, t = residuals
    h, w, c = cotangent.shape
    hp, wp = h + 2 * g.margin, w + 2 * g.margin
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    inv = jnp.stack([jnp.stack([m[1, 1], -m[0, 1]]), jnp.stack([-m[1, 0], m[0, 0]])]) / det
    qy, qx = jnp.meshgrid(jnp.arange(hp, dtype=jnp.float32), jnp.arange(wp, dtype=jnp.float32), indexing="ij")
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    # The output point that would read q exactly, and the first integer of the window around it.
    dy, dx = qy - g.margin - cy - t[0], qx - g.margin - cx - t[1]
    start_y = jnp.floor(cy + inv[0, 0] * dy + inv[0, 1] * dx - jnp.abs(inv[0]).sum()).astype(jnp.int32) + 1
    start_x = jnp.floor(cx + inv[1, 0] * dy + inv[1, 1] * dx - jnp.abs(inv[1]).sum()).astype(jnp.int32) + 1
    flat = cotangent.reshape(h * w, c)
    qy_i, qx_i = qy.astype(jnp.int32), qx.astype(jnp.int32)

    def add_reader(grad, offset):
        py, px = start_y + offset // g.window, start_x + offset % g.window
        inside = (py >= 0) & (py < h) & (px >= 0) & (px < w)
        # The reader's taps, recomputed exactly as the forward pass computed them.
        sy, sx = _sources(m, t, py.astype(jnp.float32), px.astype(jnp.float32), g)
        y0, fy = _taps(sy, hp)
        x0, fx = _taps(sx, wp)
        weight = jnp.where(inside, _tap_weight(y0, fy, qy_i) * _tap_weight(x0, fx, qx_i), 0.0)
        index = jnp.clip(py, 0, h - 1) * w + jnp.clip(px, 0, w - 1)
        return grad + weight[..., None] * jnp.take(flat, index.reshape(-1), axis=0).reshape(hp, wp, c), None

    # A loop, not an unrolled sum: XLA:CPU would fuse the unrolled sum into each piece of the mirror pad's
    # adjoint and recompute it there; a loop's result is computed once.
    grad, _ = jax.lax.scan(add_reader, jnp.zeros((hp, wp, c), cotangent.dtype), jnp.arange(g.window ** 2))
    return grad, jnp.zeros_like(m), jnp.zeros_like(t)


_sample.defvjp(_sample_fwd, _sample_bwd)


def affine_resample(x: jax.Array, matrices: jax.Array, reach: Reach,
                    offsets: jax.Array | None = None) -> jax.Array:
    """Bilinear resampling of NHWC ``x``: output ``p`` of image ``n`` reads ``c + M[n] (p - c) + t[n]``,
    mirror borders.

    ``matrices`` (N, 2, 2) and ``offsets`` ``t`` (N, 2; zeros if None), in (row, col) coordinates, must
    lie within ``reach`` (see ``reach_of``); one beyond it reads a clamped border where the mirror would
    have continued, and its gradient misses readers outside the window. Gradients flow to ``x`` only.
    """
    n, h, w, c = x.shape
    margin = _margin(h, w, reach)
    if not resample_fits(h, w, reach):
        raise ValueError(f"affine_resample: matrices reaching {reach.forward:.2f}x the half-size need a border "
                         f"of {margin} pixels, more than images of size {(h, w)} can mirror")
    padded = jnp.pad(x, ((0, 0), (margin, margin), (margin, margin), (0, 0)), mode="reflect")
    geometry = _Geometry(h, w, margin, _window(reach))
    offsets = jnp.zeros((n, 2), jnp.float32) if offsets is None else offsets
    return jax.vmap(lambda image, m, t: _sample(image, m, t, geometry))(
        padded, matrices.astype(jnp.float32), jnp.asarray(offsets, jnp.float32))


__all__ = ["Reach", "reach_of", "resample_fits", "affine_resample"]
