"""Caffe's layer arithmetic as pure JAX functions on NHWC arrays.

These are the few operations where Caffe differs from the usual deep-learning defaults (output sizes
rounded up in pooling, LRN's exact normalization, deconvolution as the adjoint of convolution), written
once and shared by the explicit CaffeNet / generator modules and the prototxt-built networks.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax


def caffe_pool_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Caffe's pooled size: ceil division, minus one if the last window would start inside the padding."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_padding(shape_hw: Sequence[int], kernel, stride, pad) -> list[tuple[int, int]]:
    """(before, after) padding per spatial axis so that VALID pooling yields Caffe's ceil-rounded size."""
    padding = []
    for size, k, s, p in zip(shape_hw, kernel, stride, pad):
        out = caffe_pool_output_size(size, k, s, p)
        after = (out - 1) * s + k - size - p
        padding.append((p, max(after, 0)))
    return padding


def max_pool(x: jax.Array, kernel: Sequence[int], stride: Sequence[int],
             pad: Sequence[int] = (0, 0)) -> jax.Array:
    """Caffe MAX pooling of an NHWC array (output size rounded up; padding never wins the max)."""
    (ph, pw) = _pool_padding(x.shape[1:3], kernel, stride, pad)
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, kernel[0], kernel[1], 1),
                             (1, stride[0], stride[1], 1), ((0, 0), ph, pw, (0, 0)))


def ave_pool(x: jax.Array, kernel: Sequence[int], stride: Sequence[int],
             pad: Sequence[int] = (0, 0)) -> jax.Array:
    """Caffe AVE pooling: zero padding counts in the divisor, the ceil-rounding overhang does not."""
    (ph, pw) = _pool_padding(x.shape[1:3], kernel, stride, pad)
    window, strides = (1, kernel[0], kernel[1], 1), (1, stride[0], stride[1], 1)
    total = lax.reduce_window(x, 0.0, lax.add, window, strides, ((0, 0), ph, pw, (0, 0)))
    # Caffe's divisor is the window clipped to the padded extent [-pad, size + pad).
    ones = jnp.ones((1, x.shape[1] + 2 * pad[0], x.shape[2] + 2 * pad[1], 1), x.dtype)
    extra = ((0, 0), (0, max(ph[1] - pad[0], 0)), (0, max(pw[1] - pad[1], 0)), (0, 0))
    count = lax.reduce_window(jnp.pad(ones, extra), 0.0, lax.add, window, strides, "VALID")
    return total / count


def lrn_across_channels(x: jax.Array, local_size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> jax.Array:
    """Caffe LRN across channels: ``x * (k + alpha/n * sum_{window} x^2) ** -beta`` (zero-padded window)."""
    half = (local_size - 1) // 2
    sq = jnp.square(x)
    window_sum = lax.reduce_window(sq, 0.0, lax.add, (1, 1, 1, local_size), (1, 1, 1, 1),
                                   ((0, 0), (0, 0), (0, 0), (half, local_size - 1 - half)))
    return x * jnp.power(k + (alpha / local_size) * window_sum, -beta)


def lrn_within_channel(x: jax.Array, local_size: int = 5, alpha: float = 1.0,
                       beta: float = 0.75) -> jax.Array:
    """Caffe LRN within a channel: ``x * (1 + alpha * avepool_{n x n}(x^2)) ** -beta`` (zero-padded)."""
    half = (local_size - 1) // 2
    mean_sq = ave_pool(jnp.square(x), (local_size, local_size), (1, 1), (half, half))
    return x * jnp.power(1.0 + alpha * mean_sq, -beta)


def conv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, stride: Sequence[int] = (1, 1),
           pad: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1), groups: int = 1) -> jax.Array:
    """Caffe Convolution on NHWC with an HWIO kernel of shape (kh, kw, C_in / groups, C_out)."""
    if groups > 1:
        # One convolution per group, concatenated: the same arithmetic as feature_group_count, but XLA:CPU's
        # grouped convolution is slow to differentiate (its kernel gradient ~10x slower than the split form
        # for CaffeNet's conv2 shapes), which dominated training time on CPU.
        xs, ks = jnp.split(x, groups, axis=-1), jnp.split(kernel, groups, axis=-1)
        y = jnp.concatenate([conv2d(xg, kg, None, stride, pad, dilation) for xg, kg in zip(xs, ks)],
                            axis=-1)
        return y if bias is None else y + bias
    y = lax.conv_general_dilated(
        x, kernel, window_strides=tuple(stride), padding=[(pad[0], pad[0]), (pad[1], pad[1])],
        rhs_dilation=tuple(dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y if bias is None else y + bias


def deconv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, stride: Sequence[int] = (1, 1),
             pad: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1), groups: int = 1) -> jax.Array:
    """Caffe Deconvolution (the adjoint of Convolution) on NHWC.

    ``kernel`` is the equivalent *forward* convolution kernel, HWIO (kh, kw, C_in / groups, C_out),
    already spatially flipped: ``weights_convert.layouts.deconv_kernel`` makes it from Caffe's
    [C_in, C_out / groups, kh, kw] blob. Output size: ``stride * (in - 1) + dilation * (k - 1) + 1 - 2 * pad``.
    """
    kh, kw = kernel.shape[0], kernel.shape[1]
    if tuple(stride) != (1, 1) and tuple(dilation) == (1, 1):
        y = _deconv2d_phases(x, kernel, tuple(stride), tuple(pad), groups)
        return y if bias is None else y + bias
    eff = [dilation[0] * (kh - 1), dilation[1] * (kw - 1)]
    y = lax.conv_general_dilated(
        x, kernel, window_strides=(1, 1),
        padding=[(eff[0] - pad[0], eff[0] - pad[0]), (eff[1] - pad[1], eff[1] - pad[1])],
        lhs_dilation=tuple(stride), rhs_dilation=tuple(dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
    return y if bias is None else y + bias



def _phase_taps(size: int, k: int, s: int, pad: int) -> list[tuple[int, int, int]]:
    """Per output phase r (rows s*q + r): (first kernel tap, low padding, high padding) of its stride-1 conv."""
    full_pad, out = k - 1 - pad, s * (size - 1) + k - 2 * pad
    q = -(-out // s)
    taps = []
    for r in range(s):
        k0 = (full_pad - r) % s
        m = len(range(k0, k, s))
        low = -((r + k0 - full_pad) // s)
        taps.append((k0, low, q + m - 1 - (size + low)))
    return taps


def _deconv2d_phases(x: jax.Array, kernel: jax.Array, stride: tuple[int, int], pad: Sequence[int],
                     groups: int) -> jax.Array:
    """Strided deconvolution as stride*stride ordinary convolutions, one per output phase, interleaved.

    The same sums as convolving the zero-dilated input (``lhs_dilation``), without the multiplications by
    the inserted zeros: output row ``s*q + r`` only sees kernel rows ``k0(r)::s``. XLA:CPU runs (and
    differentiates) the dilated form about 4x slower, which dominated generator training and J_G^T g.
    """
    (kh, kw), (sh, sw) = kernel.shape[:2], stride
    n, h, w, _ = x.shape
    out_h, out_w = sh * (h - 1) + kh - 2 * pad[0], sw * (w - 1) + kw - 2 * pad[1]
    qh, qw = -(-out_h // sh), -(-out_w // sw)
    rows = []
    for k0h, lo_h, hi_h in _phase_taps(h, kh, sh, pad[0]):
        cols = []
        for k0w, lo_w, hi_w in _phase_taps(w, kw, sw, pad[1]):
            sub = kernel[k0h::sh, k0w::sw]
            if sub.shape[0] == 0 or sub.shape[1] == 0:  # kernel smaller than the stride: this phase is empty
                cols.append(jnp.zeros((n, qh, qw, kernel.shape[-1]), x.dtype))
                continue
            cols.append(lax.conv_general_dilated(
                x, sub, window_strides=(1, 1), padding=[(lo_h, hi_h), (lo_w, hi_w)],
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups))
        rows.append(jnp.stack(cols, axis=3))                  # (n, qh, qw, sw, C)
    y = jnp.stack(rows, axis=2)                                # (n, qh, sh, qw, sw, C)
    return y.reshape(n, qh * sh, qw * sw, -1)[:, :out_h, :out_w]

def leaky_relu(x: jax.Array, negative_slope: float = 0.0) -> jax.Array:
    """Caffe ReLU with ``negative_slope`` (0 gives the plain rectifier)."""
    if negative_slope == 0.0:
        return jnp.maximum(x, 0.0)
    return jnp.where(x > 0, x, negative_slope * x)


def flatten_nhwc(x: jax.Array) -> jax.Array:
    """Flatten all but the batch axis in H, W, C order (inner-product weights are reordered to match)."""
    return x.reshape(x.shape[0], -1)
