"""MACO (Fel et al. 2023): a phase-only Fourier image with a natural-image magnitude, Xplique's NAdam(1.0).

``maco_image_for`` fits ``jaxviz.core.maco.MacoImage`` to a model's card and a set of real images;
``digits_spectrum`` is the magnitude of the embedded pair, computed at call time from the shipped
held-out digits (nothing extra is shipped, so it cannot drift from the digits).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import optax

from jaxviz.core import transforms as T
from jaxviz.core.colour import colour_matrix
from jaxviz.core.loop import Method
from jaxviz.core.maco import MacoImage, magnitude_spectrum
from jaxviz.models import shipped
from jaxviz.recipes.lucid import card_fields
from jaxviz.recipes.preset import Preset

XPLIQUE_LR = 1.0   # Xplique's maco(): tf.keras.optimizers.Nadam(1.0) on the phase


def display_images(images: np.ndarray) -> np.ndarray:
    """uint8 display images (N, H, W) gray or (N, H, W, 3) RGB -> float (N, H, W, C) in [0, 1]."""
    x = np.asarray(images, np.float32) / 255.0
    return x[..., None] if x.ndim == 3 else x


def digits_spectrum() -> np.ndarray:
    """(1, 28, 28) mean amplitude spectrum of the shipped held-out digits, pixels in [0, 1]."""
    images, _ = shipped.heldout_digits()
    return magnitude_spectrum(display_images(images))


def power_law_spectrum(channels: int, height: int, width: int, decay_power: float = 1.0) -> np.ndarray:
    """(C, H, W) natural images' amplitude law ``1 / max(f, 1 / max(H, W))^decay_power`` (f in cycles per
    pixel): a MACO magnitude for a model with no real images at hand (Lucid's Fourier image scale)."""
    f = np.sqrt(np.fft.fftfreq(height)[:, None] ** 2 + np.fft.fftfreq(width)[None, :] ** 2)
    m = 1.0 / np.maximum(f, 1.0 / max(height, width)) ** decay_power
    return np.broadcast_to(m, (channels, height, width)).astype(np.float32)


def maco_image_for(height: int, width: int, preprocessing: dict[str, Any] | None = None,
                   images: np.ndarray | None = None, magnitude: np.ndarray | None = None,
                   **kwargs: Any) -> MacoImage:
    """A MacoImage for a model's card, its magnitude from ``magnitude`` (C, H, W) or from real ``images``.

    ``images`` are display images (uint8, gray (N, H, W) or RGB (N, H, W, 3)); their spectrum is taken in
    the decorrelated colour basis the image is rendered from. Give neither for a gray 28x28 card: the
    shipped digits' spectrum (``digits_spectrum``).
    """
    fields = {**card_fields(height, width, preprocessing), **kwargs}
    channels = fields.pop("channels")
    if magnitude is None:
        if images is None:
            if (channels, height, width) != (1, 28, 28):
                raise ValueError("pass images (or a magnitude) to compute MACO's spectrum for this model")
            magnitude = digits_spectrum()
        else:
            matrix = colour_matrix(fields.get("colour_matrix"), channels) if fields.get("decorrelate", True) else None
            magnitude = magnitude_spectrum(display_images(images), matrix)
    magnitude = np.asarray(magnitude, np.float32)
    if magnitude.shape != (channels, height, width):
        raise ValueError(f"the magnitude has shape {magnitude.shape}; the image needs {(channels, height, width)}")
    return MacoImage(height, width, channels, tuple(magnitude.ravel().tolist()), **fields)


def maco(image_shape: Sequence[int], preprocessing: dict | None = None, images: np.ndarray | None = None,
         steps: int = 256, lr: float = XPLIQUE_LR, robust: bool = True,
         magnitude: np.ndarray | None = None) -> Preset:
    """MACO with Xplique's settings: NAdam(1.0) on the phase, 256 steps, robustness transforms (Xplique
    uses random crops and noise; here the library's standard jitter, scale and rotate). The spectrum is
    ``magnitude`` or that of ``images``, as in ``maco_image_for``."""
    h, w = int(image_shape[0]), int(image_shape[1])
    method = Method(steps, optax.nadam(lr), transform=T.standard_transforms() if robust else None, name="maco")
    return Preset(maco_image_for(h, w, preprocessing, images, magnitude), method, name="maco")


__all__ = ["maco", "maco_image_for", "digits_spectrum", "power_law_spectrum", "display_images", "XPLIQUE_LR"]
