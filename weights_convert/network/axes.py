"""Caffe's axis order versus the jaxviz layout a prototxt-built network holds its blobs in.

A 4-D Caffe blob (N, C, H, W) is held NHWC, like the explicit modules; blobs of any other rank keep
Caffe's axis order. Layers whose meaning depends on axis order (Reshape, Flatten) work on the
Caffe-ordered view and transpose back, so they are exact for any input.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from weights_convert.errors import UnsupportedLayerError
from weights_convert.network.graph import Shape


def to_caffe_order(x: jax.Array) -> jax.Array:
    """A blob in Caffe's axis order (NHWC -> NCHW for 4-D blobs, unchanged otherwise)."""
    return jnp.transpose(x, (0, 3, 1, 2)) if x.ndim == 4 else x


def from_caffe_order(x: jax.Array) -> jax.Array:
    """Inverse of ``to_caffe_order``: a Caffe-ordered blob in jaxviz layout."""
    return jnp.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x


def caffe_shape(shape: Sequence[int]) -> Shape:
    """The Caffe-order shape of a blob held with jaxviz ``shape``."""
    shape = tuple(shape)
    return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape


def jaxviz_shape(shape: Sequence[int]) -> Shape:
    """The jaxviz-layout shape of a blob whose Caffe shape is ``shape``."""
    shape = tuple(int(s) for s in shape)
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else shape


def layout_axis(axis: int, ndim: int) -> int:
    """The array axis that holds Caffe axis ``axis`` (negative counts from the end) of an ``ndim`` blob."""
    if not -ndim <= axis < ndim:
        raise UnsupportedLayerError(f"axis {axis} is out of range for a {ndim}-D blob")
    axis %= ndim
    return (0, 3, 1, 2)[axis] if ndim == 4 else axis


def caffe_reshape(shape: Sequence[int], dims: Sequence[int], axis: int = 0, num_axes: int = -1) -> Shape:
    """Caffe Reshape's output shape: ``dims`` replace axes [axis, axis + num_axes); 0 copies, -1 infers."""
    shape = tuple(int(s) for s in shape)
    start = axis + len(shape) + 1 if axis < 0 else axis
    end = len(shape) if num_axes == -1 else start + num_axes
    if not 0 <= start <= end <= len(shape):
        raise UnsupportedLayerError(f"reshape axis {axis}, num_axes {num_axes} do not fit a blob of shape {shape}")
    if list(dims).count(-1) > 1:
        raise UnsupportedLayerError(f"reshape dims {list(dims)} have more than one -1")
    middle = [shape[start + i] if d == 0 else int(d) for i, d in enumerate(dims)]
    out = list(shape[:start]) + middle + list(shape[end:])
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or math.prod(shape) % known:
            raise UnsupportedLayerError(f"cannot reshape {shape} to {list(dims)}")
        out[out.index(-1)] = math.prod(shape) // known
    if math.prod(out) != math.prod(shape):
        raise UnsupportedLayerError(f"reshape of {shape} ({math.prod(shape)} values) to {tuple(out)} "
                                    f"changes the element count")
    return tuple(out)
