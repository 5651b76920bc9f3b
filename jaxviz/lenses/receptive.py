"""Receptive fields: which input pixels can influence a conv unit at one position of its map.

For a CaffeNet the geometry follows from its config (every convolution's kernel, stride and pad, the
pooling windows; LRN is 1x1 in space): output row ``r`` of a tap sees input rows
``r * stride - offset ... r * stride - offset + size - 1``, clipped to the image. For any other network
the support is measured: the bounding box of the nonzero gradient of the position's activations with
respect to the input, over a few random inputs (``gradient_footprint``); that is exact wherever every
pixel of the field has a nonzero path in at least one probe, and needs no knowledge of the layers.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.models.caffenet import CaffeNet, CaffeNetConfig
from jaxviz.models.model import Model

# (top, left, bottom, right) in input pixels, bottom/right exclusive.
Box = tuple[int, int, int, int]
FOOTPRINT_PROBES = 4


@dataclasses.dataclass(frozen=True)
class Geometry:
    """A tap's receptive field: input row of output row r starts at ``r * stride - offset``, spans ``size``."""

    size: int     # pixels on a side of one unit's field (before clipping to the image)
    stride: int   # input pixels between neighbouring positions of the map
    offset: int   # total padding in front, in input pixels


def compose(ops: Sequence[tuple[int, int, int]]) -> Geometry:
    """The geometry of a chain of windowed layers ``(kernel, stride, pad)`` applied in forward order."""
    size, stride, offset = 1, 1, 0
    for kernel, s, pad in ops:
        size += (kernel - 1) * stride
        offset += pad * stride
        stride *= s
    return Geometry(size, stride, offset)


def caffenet_ops(config: CaffeNetConfig, layer: str) -> list[tuple[int, int, int]] | None:
    """The windowed layers of a CaffeNet up to tap ``layer`` (``:pre`` taps as their layer); None for fc ones."""
    base = layer.split(":")[0]
    pool = (config.pool_kernel, config.pool_stride, 0)
    order: list[tuple[str, tuple[int, int, int] | None]] = []
    for i, spec in enumerate(config.convs, 1):
        order.append((f"conv{i}", (spec.kernel, spec.stride, spec.pad)))
        if i in (1, 2, 5):
            order.append((f"pool{i}", pool))
            if i != 5:
                order.append((f"norm{i}", None))   # across channels: 1x1 in space
    ops: list[tuple[int, int, int]] = []
    for name, op in order:
        if op is not None:
            ops.append(op)
        if name == base:
            return ops
    return None


def receptive_field(model: Model, layer: str) -> Geometry | None:
    """A CaffeNet tap's geometry from the model's config; None for fc taps and other architectures."""
    if not isinstance(model.module, CaffeNet):
        return None
    ops = caffenet_ops(model.module.config, layer)
    return None if ops is None else compose(ops)


def field_box(geometry: Geometry, row: int, col: int, height: int, width: int) -> Box:
    """The input box a position's unit sees, clipped to a ``height`` x ``width`` image."""
    top, left = row * geometry.stride - geometry.offset, col * geometry.stride - geometry.offset
    return (max(top, 0), max(left, 0), min(top + geometry.size, height), min(left + geometry.size, width))


def unclipped_box(geometry: Geometry, row: int, col: int) -> Box:
    """The field's box before clipping (may reach outside the image: the padding the layers add)."""
    top, left = row * geometry.stride - geometry.offset, col * geometry.stride - geometry.offset
    return (top, left, top + geometry.size, left + geometry.size)


@functools.lru_cache(maxsize=16)
def _position_gradient(function, layer: str):
    def total(params, x, row, col):
        return function(params, x, (layer,))[layer][:, row, col, :].sum()
    return jax.jit(jax.grad(total, argnums=1))


def gradient_footprint(model: Model, layer: str, row: int, col: int, probes: int = FOOTPRINT_PROBES,
                       seed: int = 0) -> Box:
    """Bounding box of the input pixels whose gradient on the position's activations is nonzero.

    Summed over the position's channels and over ``probes`` random inputs (a ReLU that is off or a max
    pooling that picks one pixel hides part of the field in any one input). An all-zero gradient gives
    the empty box (0, 0, 0, 0).
    """
    x = jax.random.normal(jax.random.key(seed), (probes, *model.input_shape), jnp.float32) * 50.0
    grad = np.asarray(_position_gradient(model.function, layer)(model.params, x, row, col))
    support = np.abs(grad).reshape(probes, grad.shape[1], grad.shape[2], -1).max(axis=(0, 3)) > 0
    rows, cols = np.nonzero(support.any(axis=1))[0], np.nonzero(support.any(axis=0))[0]
    if not len(rows):
        return (0, 0, 0, 0)
    return (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


def padded_crop(image: np.ndarray, box: Box, fill: int = 128) -> np.ndarray:
    """``image[top:bottom, left:right]`` (H, W[, C]) where parts outside the image read as ``fill``.

    With an unclipped field box every crop of a layer has the field's full size, the image where it
    reaches past the border being shown as the padding the network saw (a flat ``fill``).
    """
    top, left, bottom, right = (int(v) for v in box)
    image = np.asarray(image)
    out = np.full((bottom - top, right - left) + image.shape[2:], fill, image.dtype)
    t, l = max(top, 0), max(left, 0)
    b, r = min(bottom, image.shape[0]), min(right, image.shape[1])
    if b > t and r > l:
        out[t - top:b - top, l - left:r - left] = image[t:b, l:r]
    return out


def crop_boxes(model: Model, layer: str, positions: np.ndarray, clip: bool = True) -> np.ndarray:
    """(..., 4) input boxes (top, left, bottom, right) of conv positions ``(..., 2)``; the whole image for fc.

    The geometry comes from the config where known (``clip=False``: the field's full box, reaching past
    the border), else from the gradient footprint of each distinct position (measured once per position,
    always inside the image).
    """
    positions = np.asarray(positions)
    height, width = model.input_shape[:2]
    boxes = np.empty(positions.shape[:-1] + (4,), np.int32)
    geometry = receptive_field(model, layer)
    measured: dict[tuple[int, int], Box] = {}
    for idx in np.ndindex(*positions.shape[:-1]):
        row, col = (int(v) for v in positions[idx])
        if row < 0:
            boxes[idx] = (0, 0, height, width)
        elif geometry is not None:
            boxes[idx] = (field_box(geometry, row, col, height, width) if clip
                          else unclipped_box(geometry, row, col))
        else:
            if (row, col) not in measured:
                measured[(row, col)] = gradient_footprint(model, layer, row, col)
            boxes[idx] = measured[(row, col)]
    return boxes


__all__ = ["Box", "Geometry", "compose", "caffenet_ops", "receptive_field", "field_box", "unclipped_box",
           "gradient_footprint", "crop_boxes", "padded_crop", "FOOTPRINT_PROBES"]
