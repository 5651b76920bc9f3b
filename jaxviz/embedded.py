"""The data shipped beside the embedded default pair: held-out demo digits and the generator's code bounds.

The networks themselves load with ``jaxviz.models.load("caffenet")`` / ``load("generator")``; their
training is described in ``jaxviz/data/embedded/TRAINING.md``.
"""

from __future__ import annotations

import importlib.resources
import io
from typing import Any, Mapping

import numpy as np

BOUNDS_FILE = "fc6_bounds.npy"
DIGITS_FILE = "heldout_digits.npz"


def _read(name: str) -> bytes:
    return importlib.resources.files("jaxviz").joinpath("data", "embedded", name).read_bytes()


def code_bounds() -> np.ndarray:
    """Per-unit upper bounds of the embedded generator's code (3 std of fc6 over training digits), float32."""
    return np.load(io.BytesIO(_read(BOUNDS_FILE)))


def heldout_digits() -> tuple[np.ndarray, np.ndarray]:
    """The shipped held-out MNIST digits: images (N, 28, 28) uint8 and labels (N,) int (never trained on)."""
    with np.load(io.BytesIO(_read(DIGITS_FILE))) as f:
        return f["images"], f["labels"].astype(np.int64)


def pixels_to_network(images: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """uint8 grayscale images (N, H, W) -> float32 NHWC network input, per a model's preprocessing card."""
    if str(preprocessing.get("channel_order", "")).lower() != "gray":
        raise ValueError("pixels_to_network handles the gray embedded models; for Caffe's BGR models use "
                         "jaxviz.models.preprocessing.rgb_to_caffe")
    scale = float(preprocessing.get("pixel_scale", 255.0)) / 255.0
    mean = np.asarray(preprocessing.get("mean", [0.0]), np.float32)
    return (np.asarray(images, np.float32)[..., None] * scale - mean).astype(np.float32)
