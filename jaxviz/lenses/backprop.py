"""Projecting one unit's signal down to the pixels: DeconvNet, saliency and guided backpropagation.

Zeiler & Fergus 2014 (DeconvNet), Simonyan et al. 2014 (saliency: the gradient) and Springenberg et al.
2015 (guided backpropagation) all run the network backwards from a chosen unit to the image, and differ
only in how a ReLU passes the backward signal (``jaxviz.models.layers.RELU_RULES``). So all three are one
``jax.vjp`` of the network from the input to the layer, traced under ``layers.relu_backward(rule)``: max
pooling's vjp already routes the signal through the recorded argmax ("switch") of each window, and a
convolution's vjp is the convolution with the transposed, flipped filters, as in the DeconvNet.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.models import layers
from jaxviz.models import preprocessing as pp

# The projection methods; the redirected rule is an optimization aid (it differs from the gradient only where
# the gradient is zero), not one of the papers' projections.
RULES = tuple(r for r in layers.RELU_RULES if r != "redirected")
KEEPS = ("map", "max")
"""What of the unit's activation is sent back: ``"map"`` the unit's whole channel map (its value, for a
vector layer), ``"max"`` only its strongest activation; a ``(row, col)`` position keeps that one value."""


def layer_shape(model: Any, layer: str) -> tuple[int, ...]:
    """Per-example shape of ``layer``'s activation for ``model``'s input size (ValueError for an unknown layer)."""
    x = jax.ShapeDtypeStruct((1, *model.input_shape), jnp.float32)
    out = jax.eval_shape(lambda p, a: model.function(p, a, (layer,)), model.params, x)
    return tuple(out[layer].shape[1:])


def check_units(model: Any, layer: str, units: Sequence[int]) -> int:
    """The width of ``layer`` after checking every unit index lies in it (ValueError naming the first bad one)."""
    width = layer_shape(model, layer)[-1]
    for u in units:
        if not 0 <= int(u) < width:
            raise ValueError(f"unit {int(u)} is out of range for layer {layer!r} ({width} units: 0..{width - 1})")
    return width


def kept_signal(act: jax.Array, unit: jax.Array, keep: str, position: jax.Array | None = None) -> jax.Array:
    """The backward signal at the layer: ``act`` (1, ..., C) zeroed except the kept part of channel ``unit``."""
    channel = jax.nn.one_hot(unit, act.shape[-1], dtype=act.dtype)
    mine = act * channel
    if act.ndim == 2 or keep == "map":
        return mine
    if keep == "position":
        row, col = position[0], position[1]
        where = jnp.zeros(act.shape[1:3], act.dtype).at[row, col].set(1.0)
    else:  # "max": the strongest activation of the channel (its first, in row-major order)
        values = jnp.take(act[0], unit, axis=-1)
        where = jax.nn.one_hot(jnp.argmax(values.ravel()), values.size, dtype=act.dtype).reshape(values.shape)
    return mine * where[None, :, :, None]


@functools.partial(jax.jit, static_argnames=("function", "layer", "rule", "keep"))
def _project(function, params, image, layer: str, units, rule: str, keep: str, position):
    """One forward pass under ``rule``, then one vjp per unit, vmapped: one program for every unit."""
    with layers.relu_backward(rule):
        act, back = jax.vjp(lambda x: function(params, x, (layer,))[layer], image)
    return jax.vmap(lambda u: back(kept_signal(act, u, keep, position))[0][0])(units)


def project(model: Any, image: Any, layer: str, units: int | Sequence[int], rule: str = "deconvnet",
            keep: str | tuple[int, int] = "map") -> jax.Array:
    """Pixel-space projections (U, H, W, C) of each unit's kept activation on ``image`` (network space).

    ``image`` is one network-space image (H, W, C) or (1, H, W, C); ``units`` one index or several (one
    compiled program serves them all); ``rule`` one of ``RULES``; ``keep`` one of ``KEEPS`` or a
    ``(row, col)`` position in the layer's map. A single int ``units`` still returns a leading axis of 1.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; rules: {', '.join(RULES)}")
    x = jnp.asarray(image, jnp.float32)
    x = x[None] if x.ndim == 3 else x
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"project takes one image (H, W, C) or (1, H, W, C), got shape {tuple(x.shape)}")
    units = np.atleast_1d(np.asarray(units, np.int64))
    if units.ndim != 1 or units.size == 0:
        raise ValueError("project needs one unit index or a non-empty list of them")
    check_units(model, layer, units.tolist())
    position = None
    if isinstance(keep, tuple):
        position, keep = _check_position(model, layer, keep), "position"
    elif keep not in KEEPS:
        raise ValueError(f"keep must be one of {', '.join(KEEPS)} or a (row, col) position, got {keep!r}")
    return _project(model.function, model.params, x, layer, jnp.asarray(units, jnp.int32), rule, keep, position)


def _check_position(model: Any, layer: str, position: tuple[int, int]) -> jax.Array:
    shape = layer_shape(model, layer)
    if len(shape) != 3:
        raise ValueError(f"layer {layer!r} is a vector {shape}: a position needs a map layer")
    row, col = (int(v) for v in position)
    if not (0 <= row < shape[0] and 0 <= col < shape[1]):
        raise ValueError(f"position ({row}, {col}) is outside layer {layer!r}'s {shape[0]}x{shape[1]} map")
    return jnp.asarray([row, col], jnp.int32)


def projection_display(projection: Any, preprocessing: dict | None = None) -> np.ndarray:
    """A projection (H, W, C) as a uint8 display image: zero is mid-gray, the largest |value| black or white.

    Gray (H, W) or RGB (H, W, 3) as the model card's channel order says (BGR channels are reversed); an
    all-zero projection is uniformly gray.
    """
    m = np.asarray(projection, np.float32)
    peak = float(np.max(np.abs(m))) if m.size else 0.0
    scaled = 0.5 + 0.5 * (m / peak if peak > 0 else m)
    img = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
    order = str((pp.CAFFE_BGR if preprocessing is None else preprocessing).get("channel_order", "BGR")).upper()
    if order == "GRAY" or img.shape[-1] == 1:
        return img[..., 0]
    return img[..., ::-1] if order == "BGR" else img


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    """A display image enlarged ``scale`` times by pixel repetition (no interpolation: pixels stay visible)."""
    return np.repeat(np.repeat(np.asarray(image), scale, axis=0), scale, axis=1)


def side_by_side(left: np.ndarray, right: np.ndarray, scale: int = 1) -> np.ndarray:
    """Two display images of one size side by side, enlarged ``scale`` times, one white input pixel between."""
    left, right = np.asarray(left, np.uint8), np.asarray(right, np.uint8)
    if left.shape != right.shape:
        raise ValueError(f"side_by_side needs images of one shape, got {left.shape} and {right.shape}")
    gap = np.full((left.shape[0], 1) + left.shape[2:], 255, np.uint8)
    return enlarge(np.concatenate([left, gap, right], axis=1), scale)


__all__ = ["RULES", "KEEPS", "layer_shape", "check_units", "kept_signal", "project", "projection_display",
           "enlarge", "side_by_side"]
