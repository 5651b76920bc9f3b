"""Colour decorrelation for any number of channels: the matrix that maps a decorrelated basis to colours.

Lucid optimizes images in a basis where the channels are uncorrelated and maps them to RGB with the
square root of ImageNet's colour correlation (``lucid/optvis/param/color.py``), which only exists for 3
channels (Lucid issues #146 and #175 ask for grayscale and more channels). Here a parameterization holds
a C x C matrix ``M`` and renders ``colours = M t`` per pixel:

- 1 channel: ``M = [[1]]``, a gray image is its own (trivially decorrelated) channel;
- 3 channels: Lucid's ImageNet matrix unless one is given;
- any C: the matrix a user gives (e.g. ``colour_sqrt_from_images`` of their data), identity by default.

A matrix is stored flattened row-major as a tuple of floats, so the records holding it stay hashable
and compared by value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# lucid/optvis/param/color.py: square root of ImageNet's RGB colour correlation (via its SVD).
COLOR_CORRELATION_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02],
                                         [0.27, 0.00, -0.05],
                                         [0.27, -0.09, 0.03]], np.float32)
COLOR_CORRELATION_NORMALIZED = (COLOR_CORRELATION_SVD_SQRT
                                / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))).astype(np.float32)


def normalize_columns(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` divided by its largest column norm (Lucid's normalization, so no channel is amplified)."""
    m = np.asarray(matrix, np.float64)
    return (m / np.max(np.linalg.norm(m, axis=0))).astype(np.float32)


def colour_sqrt_from_images(images: np.ndarray, normalize: bool = True) -> np.ndarray:
    """(C, C) square root ``U sqrt(S)`` of the channel covariance of ``images`` (N, H, W, C), as Lucid's.

    The covariance is over every pixel of every image (channel means removed); its SVD ``U S U^T`` gives
    ``U sqrt(S)``, whose product with its transpose is the covariance again. With ``normalize`` the result
    is divided by its largest column norm, as Lucid does with its ImageNet matrix.
    """
    x = np.asarray(images, np.float64)
    flat = x.reshape(-1, x.shape[-1])
    cov = np.atleast_2d(np.cov(flat, rowvar=False))
    u, s, _ = np.linalg.svd(cov)
    root = u * np.sqrt(s)[None, :]
    return normalize_columns(root) if normalize else root.astype(np.float32)


def default_colour_matrix(channels: int) -> np.ndarray:
    """The matrix used when none is given: Lucid's for 3 channels, identity otherwise (1 channel: [[1]])."""
    if channels == 3:
        return COLOR_CORRELATION_NORMALIZED
    return np.eye(channels, dtype=np.float32)


def freeze_matrix(matrix: np.ndarray | None, channels: int) -> tuple[float, ...] | None:
    """A C x C matrix as a row-major tuple of floats (hashable), checking its shape; None stays None."""
    if matrix is None:
        return None
    m = np.asarray(matrix, np.float32)
    if m.size != channels * channels:
        raise ValueError(f"a colour matrix for {channels} channels has {channels}x{channels} entries, "
                         f"got shape {m.shape}")
    return tuple(float(v) for v in m.ravel())


def colour_matrix(frozen: tuple[float, ...] | None, channels: int) -> np.ndarray:
    """The (C, C) matrix a record holds (``freeze_matrix``), or the default for ``channels``."""
    if frozen is None:
        return default_colour_matrix(channels)
    return np.asarray(frozen, np.float32).reshape(channels, channels)




def sigmoid_to_input(t: jax.Array, offset: tuple[float, ...], bgr: bool, pixel_scale: float,
                     mean: np.ndarray) -> jax.Array:
    """(n, H, W, C) values in the colour basis -> the network's input space, as ``FourierImage`` does.

    ``sigmoid(t + offset)`` puts every colour in [0, 1] (``offset`` per channel in RGB order, or one),
    3-channel images are flipped to BGR when ``bgr``, then ``colours * pixel_scale - mean``.
    """
    colours = jax.nn.sigmoid(t + jnp.asarray(offset, t.dtype))
    if bgr and t.shape[-1] == 3:
        colours = colours[..., ::-1]
    return colours * pixel_scale - jnp.asarray(mean, t.dtype)


def channel_mean(mean: tuple[float, ...] | None, channels: int) -> np.ndarray:
    """The per-channel mean a record subtracts (None: zero), broadcast to ``channels`` values."""
    if mean is None:
        return np.zeros(channels, np.float32)
    return np.broadcast_to(np.asarray(mean, np.float32), (channels,)).copy()


def check_per_channel(name: str, values: tuple[float, ...] | None, channels: int) -> tuple[float, ...] | None:
    """``values`` as a tuple of floats with 1 or ``channels`` entries (a clear error otherwise)."""
    if values is None:
        return None
    out = tuple(float(v) for v in np.atleast_1d(values))
    if len(out) not in (1, channels):
        raise ValueError(f"{name} has {len(out)} values for {channels} channels")
    return out


__all__ = ["COLOR_CORRELATION_SVD_SQRT", "COLOR_CORRELATION_NORMALIZED", "normalize_columns",
           "colour_sqrt_from_images", "default_colour_matrix", "freeze_matrix", "colour_matrix",
           "sigmoid_to_input", "channel_mean", "check_per_channel"]
