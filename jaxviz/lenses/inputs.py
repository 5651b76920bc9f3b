"""Real images in a model's input space: read with Pillow, matched to its channels and size, by its card."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxviz.models import preprocessing as pp
from jaxviz.models import shipped


def _channels(model: Any) -> int:
    return int(model.input_shape[-1])


def fit_to_model(pixels: Any, model: Any) -> tuple[np.ndarray, bool]:
    """A display image (uint8 (H, W) gray or (H, W, 3) RGB) as the model's network input (H, W, C), and
    whether it had to be resized to the model's input size."""
    pil = Image.fromarray(np.asarray(pixels, np.uint8))
    pil = pil.convert("L" if _channels(model) == 1 else "RGB")
    height, width = int(model.input_shape[0]), int(model.input_shape[1])
    resized = pil.size != (width, height)
    if resized:
        pil = pil.resize((width, height), resample=Image.Resampling.BILINEAR)
    return pp.to_network(np.asarray(pil)[None], model.preprocessing or None)[0], resized


def read_image(path: str | os.PathLike, model: Any) -> tuple[np.ndarray, bool, tuple[int, int]]:
    """An image file as the model's network input (H, W, C), whether it was resized, and its own (W, H).

    A missing or unreadable file is a ValueError naming it.
    """
    try:
        with Image.open(path) as img:
            img.load()
            size = img.size
            pixels = np.asarray(img.convert("L" if _channels(model) == 1 else "RGB"))
    except FileNotFoundError:
        raise ValueError(f"no such image file: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read {path} as an image ({type(err).__name__})") from None
    x, resized = fit_to_model(pixels, model)
    return x, resized, size


def unit_peaks(model: Any, images: np.ndarray, layer: str, unit: int, batch: int = 100) -> np.ndarray:
    """Each network-space image's strongest activation of ``unit`` in ``layer`` (its value, for a vector layer)."""
    forward = jax.jit(lambda p, x: model.function(p, x, (layer,))[layer][..., unit])
    peaks = []
    for start in range(0, len(images), batch):
        a = forward(model.params, jnp.asarray(images[start:start + batch]))
        peaks.append(np.asarray(a.reshape(a.shape[0], -1).max(axis=1)))
    return np.concatenate(peaks)


def shipped_digit(model: Any, index: int) -> np.ndarray:
    """Shipped reference digit ``index`` as the model's network input (H, W, C)."""
    digits, _ = shipped.reference_digits()
    if not 0 <= index < len(digits):
        raise ValueError(f"digit {index} is out of range: the shipped reference digits are 0..{len(digits) - 1}")
    return fit_to_model(digits[index], model)[0]


def strongest_digit(model: Any, layer: str, unit: int) -> tuple[int, np.ndarray]:
    """The index of the shipped reference digit that activates ``unit`` most, and that digit as network input."""
    digits, _ = shipped.reference_digits()
    images = np.stack([fit_to_model(d, model)[0] for d in digits])
    index = int(np.argmax(unit_peaks(model, images, layer, unit)))
    return index, images[index]


__all__ = ["fit_to_model", "read_image", "unit_peaks", "shipped_digit", "strongest_digit"]
