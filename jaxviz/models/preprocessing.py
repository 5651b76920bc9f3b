"""A model's input space: between ordinary images and network input, and back for display.

A model card's ``preprocessing`` entry says what a network expects: ``channel_order`` ("BGR", "RGB" or
"gray"), ``pixel_scale`` (the value of white, 255 for Caffe) and ``mean`` (per-channel values, or the
name of the shipped ILSVRC mean: "image" or "channel"). Every conversion of a model's images goes
through the card functions here (``mean_array``, ``to_network``, ``to_display``); the Caffe-space
helpers below them (BGR, 0-255, ImageNet mean off) are their building blocks.

Arrays are channels-last, ``(..., H, W, C)``. The array helpers accept numpy or JAX arrays and return the
same kind (JAX ones stay differentiable). The mean image ships with the package (``jaxviz/data``),
converted once from the DGN-AM release's ``ilsvrc_2012_mean.mat`` by ``weights_convert.mean_image``.
"""

from __future__ import annotations

from typing import Any, Mapping, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.models import shipped

# Channel means of Caffe's ilsvrc_2012_mean (B, G, R). The shipped image's own means agree to ~6e-4.
MEAN_BGR = np.array([104.0069879317889, 116.66876761696767, 122.6789143406786], np.float32)
MEAN_IMAGE_SIZE = 256
# DGN-AM saves images by clipping Caffe-space values to this range (no mean added back).
DGN_AM_CLIP = 120.0

Mean = Union[str, np.ndarray, jax.Array, None]


def _xp(x: Any):
    return jnp if isinstance(x, jax.Array) else np


def mean_image() -> np.ndarray:
    """The 256x256 ILSVRC 2012 mean image, float32, HWC, BGR (read-only)."""
    return shipped.mean_image()


def mean_crop(size: int = 227) -> np.ndarray:
    """Centre ``size`` x ``size`` crop of the mean image (offset 14 for 227), as DGN-AM subtracts it."""
    if not 0 < size <= MEAN_IMAGE_SIZE:
        raise ValueError(f"mean crop size must be in 1..{MEAN_IMAGE_SIZE}, got {size}")
    o = (MEAN_IMAGE_SIZE - size) // 2
    return mean_image()[o:o + size, o:o + size]


def resolve_mean(mean: Mean, height: int, width: int) -> np.ndarray:
    """The BGR mean to subtract for an image of this size.

    ``"image"``: the centre crop of the mean image (square images up to 256 only); ``"channel"``: the
    per-channel means; ``None``: zero; an array: itself (broadcast against ``(H, W, 3)``).
    """
    if mean is None:
        return np.zeros(3, np.float32)
    if isinstance(mean, str):
        if mean == "channel":
            return MEAN_BGR
        if mean == "image":
            if height != width or height > MEAN_IMAGE_SIZE:
                raise ValueError(f"the mean image covers square images up to {MEAN_IMAGE_SIZE}, got "
                                 f"{height}x{width}; use mean='channel'")
            return mean_crop(height)
        raise ValueError(f"mean must be 'image', 'channel', None or an array, got {mean!r}")
    return mean


def rgb_to_caffe(image: Any, mean: Mean = "image", *, white: float = 255.0) -> Any:
    """RGB image(s) (uint8, or float with ``white`` as full scale) -> Caffe space float32 (BGR, mean off)."""
    xp = _xp(image)
    x = xp.asarray(image).astype(xp.float32) * (255.0 / white)
    if x.shape[-1] != 3:
        raise ValueError(f"expected RGB images (..., H, W, 3), got shape {x.shape}")
    return x[..., ::-1] - resolve_mean(mean, x.shape[-3], x.shape[-2])


def caffe_to_rgb(x: Any, mean: Mean = "image", *, white: float = 255.0) -> Any:
    """Exact inverse of ``rgb_to_caffe`` (float32 RGB, full scale ``white``, not clipped)."""
    xp = _xp(x)
    x = xp.asarray(x, dtype=xp.float32)
    bgr = x + resolve_mean(mean, x.shape[-3], x.shape[-2])
    return bgr[..., ::-1] * (white / 255.0)


def display_photo(x: Any, mean: Mean = "image") -> Any:
    """Photographic view of a Caffe-space image: add the mean back, clip to [0, 255], RGB (float32)."""
    xp = _xp(x)
    return xp.clip(caffe_to_rgb(x, mean), 0.0, 255.0)


def display_dgn_am(x: Any) -> Any:
    """DGN-AM's view of a Caffe-space image: clip to [-120, 120], map linearly to [0, 1], RGB; no mean."""
    xp = _xp(x)
    x = xp.asarray(x, dtype=xp.float32)
    return (xp.clip(x, -DGN_AM_CLIP, DGN_AM_CLIP) + DGN_AM_CLIP)[..., ::-1] / (2 * DGN_AM_CLIP)


def to_uint8(image: Any, *, white: float = 255.0) -> np.ndarray:
    """A float image with full scale ``white`` (255, or 1 for ``display_dgn_am``) -> rounded uint8 numpy."""
    x = np.asarray(image, dtype=np.float32) * (255.0 / white)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# ----- a model card's preprocessing -------------------------------------------------------------------

# Without a card, an image is taken to be in real CaffeNet space.
CAFFE_BGR = {"channel_order": "BGR", "pixel_scale": 255.0, "mean": "image"}
VIEWS = ("photo", "dgn_am")


def mean_array(preprocessing: Mapping[str, Any] | None, height: int, width: int) -> np.ndarray:
    """The mean a card subtracts, as a float32 array broadcastable to ``(height, width, C)``."""
    pre = CAFFE_BGR if preprocessing is None else preprocessing
    mean = pre.get("mean", 0.0)
    if isinstance(mean, str) or mean is None:
        return np.asarray(resolve_mean(mean, height, width), np.float32)
    return np.asarray(mean, np.float32)


def to_network(pixels: Any, preprocessing: Mapping[str, Any] | None) -> np.ndarray:
    """Display-space images (uint8 RGB ``(N, H, W, 3)`` or gray ``(N, H, W)``) -> float32 network input."""
    pre = CAFFE_BGR if preprocessing is None else preprocessing
    x = np.asarray(pixels, np.float32) * (float(pre.get("pixel_scale", 255.0)) / 255.0)
    order = str(pre.get("channel_order", "BGR")).upper()
    if order == "GRAY":
        x = x[..., None] if x.shape[-1:] != (1,) else x
    elif x.shape[-1] != 3:
        raise ValueError(f"a {order} model takes RGB images (..., H, W, 3), got shape {x.shape}")
    elif order == "BGR":
        x = x[..., ::-1]
    return (x - mean_array(pre, x.shape[-3], x.shape[-2])).astype(np.float32)


STRETCH = "stretch"  # a card's "display" entry: show each image from its own minimum to its maximum


def to_display(x: Any, preprocessing: Mapping[str, Any] | None = None, view: str = "photo") -> np.ndarray:
    """Network-space image(s) (..., H, W, C) -> uint8 for display: gray (..., H, W) or RGB (..., H, W, 3).

    ``view="photo"`` adds the mean back and clips to the pixel range (the faithful view);
    ``view="dgn_am"`` is DGN-AM's own: clip to [-120, 120] and stretch linearly, without the mean.
    ``preprocessing`` None means Caffe's BGR space; a card with ``"display": "stretch"`` (what a network
    of the user's that names no input space gets) stretches each image from its own minimum to its
    maximum. One channel is always gray.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    pre = CAFFE_BGR if preprocessing is None else preprocessing
    x = np.asarray(x, np.float32)
    scale = 255.0 / float(pre.get("pixel_scale", 255.0))
    if pre.get("display") == STRETCH:
        low = x.min(axis=(-3, -2, -1), keepdims=True)
        span = np.maximum(x.max(axis=(-3, -2, -1), keepdims=True) - low, 1e-12)
        img = np.rint((x - low) * (255.0 / span)).astype(np.uint8)
        return img[..., 0] if img.shape[-1] == 1 else img
    if view == "photo":
        img = np.clip((x + mean_array(pre, x.shape[-3], x.shape[-2])) * scale, 0.0, 255.0)
    else:
        img = (np.clip(x, -DGN_AM_CLIP, DGN_AM_CLIP) + DGN_AM_CLIP) * (255.0 / (2 * DGN_AM_CLIP))
    img = np.rint(img).astype(np.uint8)
    order = str(pre.get("channel_order", "BGR")).upper()
    if order == "GRAY" or img.shape[-1] == 1:
        return img[..., 0]
    return img[..., ::-1] if order == "BGR" else img


__all__ = ["STRETCH", "MEAN_BGR", "DGN_AM_CLIP", "CAFFE_BGR", "VIEWS", "mean_image", "mean_crop", "resolve_mean",
           "rgb_to_caffe", "caffe_to_rgb", "display_photo", "display_dgn_am", "to_uint8", "mean_array",
           "to_network", "to_display"]
