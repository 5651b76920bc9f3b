"""Naive numpy transcriptions of Caffe's layer definitions (NCHW, Caffe weight layouts, float64 loops).

Deliberately written as loops over output positions, following Caffe's C++ (pooling_layer.cpp,
lrn_layer.cpp, conv/deconv via im2col semantics), so they share no code with jaxviz.
"""

from __future__ import annotations

import math

import numpy as np


def pooled_size(size: int, k: int, s: int, p: int) -> int:
    out = int(math.ceil((size + 2 * p - k) / s)) + 1
    if p and (out - 1) * s >= size + p:
        out -= 1
    return out


def max_pool(x: np.ndarray, k: int, s: int, p: int = 0) -> np.ndarray:
    n, c, h, w = x.shape
    ph_n, pw_n = pooled_size(h, k, s, p), pooled_size(w, k, s, p)
    out = np.empty((n, c, ph_n, pw_n))
    for ph in range(ph_n):
        for pw in range(pw_n):
            hs, ws = ph * s - p, pw * s - p
            he, we = min(hs + k, h), min(ws + k, w)
            hs, ws = max(hs, 0), max(ws, 0)
            out[:, :, ph, pw] = x[:, :, hs:he, ws:we].max(axis=(2, 3))
    return out


def ave_pool(x: np.ndarray, k: int, s: int, p: int = 0) -> np.ndarray:
    n, c, h, w = x.shape
    ph_n, pw_n = pooled_size(h, k, s, p), pooled_size(w, k, s, p)
    out = np.empty((n, c, ph_n, pw_n))
    for ph in range(ph_n):
        for pw in range(pw_n):
            hs, ws = ph * s - p, pw * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            pool_size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            out[:, :, ph, pw] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / pool_size
    return out


def lrn_across(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    n, c, h, w = x.shape
    pre = (size - 1) // 2
    out = np.empty_like(x, dtype=np.float64)
    for ch in range(c):
        lo, hi = max(ch - pre, 0), min(ch - pre + size, c)
        scale = k + alpha / size * np.sum(x[:, lo:hi] ** 2, axis=1)
        out[:, ch] = x[:, ch] * scale ** -beta
    return out


def lrn_within(x: np.ndarray, size: int, alpha: float, beta: float) -> np.ndarray:
    # Caffe builds it from layers: square -> AVE pool (pad (size-1)/2, stride 1) -> (1 + alpha*.)^-beta -> product.
    pooled = ave_pool(x.astype(np.float64) ** 2, size, 1, (size - 1) // 2)
    return x * (1.0 + alpha * pooled) ** -beta


def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0, group: int = 1) -> np.ndarray:
    """Caffe convolution: w is [O, I/g, kh, kw]."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    og = o // group
    out = np.zeros((n, o, oh, ow))
    for oc in range(o):
        g = oc // og
        for y in range(oh):
            for xx in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, y * stride:y * stride + kh, xx * stride:xx * stride + kw]
                out[:, oc, y, xx] = np.sum(patch * w[oc], axis=(1, 2, 3)) + b[oc]
    return out


def deconv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0, group: int = 1) -> np.ndarray:
    """Caffe deconvolution as an explicit scatter-add: w is [I, O/g, kh, kw]; the border ``pad`` is cropped."""
    n, c, h, wd = x.shape
    ci, og, kh, kw = w.shape
    cg = c // group
    full = np.zeros((n, og * group, stride * (h - 1) + kh, stride * (wd - 1) + kw))
    for ic in range(c):
        g = ic // cg
        for y in range(h):
            for xx in range(wd):
                contrib = x[:, ic, y, xx][:, None, None, None] * w[ic][None]
                full[:, g * og:(g + 1) * og, y * stride:y * stride + kh, xx * stride:xx * stride + kw] += contrib
    out = full[:, :, pad:full.shape[2] - pad, pad:full.shape[3] - pad]
    return out + b[None, :, None, None]


def inner_product(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Caffe inner product: flattens N x (C, H, W) in C, H, W order; w is [out, in]."""
    return x.reshape(x.shape[0], -1) @ w.T + b


def nchw(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, 3, 1, 2))


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, 2, 3, 1))
