"""MATLAB's ``imresize`` (bicubic, antialiased when shrinking) and ``rgb2ycbcr`` luma, in numpy.

Super-resolution figures (Set5 PSNRs) are defined by MATLAB's resize, whose border handling (mirror
padding) and antialiasing differ from Pillow's and OpenCV's; this follows MATLAB's ``contributions``.
"""

from __future__ import annotations

import math

import numpy as np


def _cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB's bicubic kernel (a = -0.5)."""
    a = np.abs(x)
    return ((1.5 * a ** 3 - 2.5 * a ** 2 + 1) * (a <= 1)
            + (-0.5 * a ** 3 + 2.5 * a ** 2 - 4 * a + 2) * ((a > 1) & (a <= 2)))


def _contributions(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per output sample, the weights and 0-based source indices MATLAB uses along one axis."""
    width = 4.0
    if scale < 1:  # antialiasing: the kernel is stretched by 1/scale
        kernel = lambda x: scale * _cubic(scale * x)  # noqa: E731
        width /= scale
    else:
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    weights = kernel(u[:, None] - idx)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], idx[:, keep]


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(img, scale)`` (bicubic) of a 2-D float image, output size ceil(scale * size)."""
    out = np.asarray(img, np.float64)
    for axis in (0, 1):  # MATLAB resizes rows first when both scales are equal
        n_in = out.shape[axis]
        weights, idx = _contributions(n_in, int(math.ceil(n_in * scale)), scale)
        moved = np.moveaxis(out, axis, 0)
        out = np.moveaxis(np.einsum("ok,ok...->o...", weights, moved[idx]), 0, axis)
    return out


def rgb2y(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` luma of a uint8 RGB image, as uint8 (ITU-R BT.601, range 16-235)."""
    rgb = np.asarray(rgb, np.float64)
    y = 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


def modcrop(img: np.ndarray, factor: int) -> np.ndarray:
    """The image cropped to height and width divisible by ``factor`` (bottom and right removed)."""
    h, w = img.shape[:2]
    return img[:h - h % factor, :w - w % factor]


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10.0 * math.log10(peak ** 2 / mse)
