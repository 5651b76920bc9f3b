"""Depthwise convolution (one input channel per group) as a sum of shifted products.

``layers.conv2d(..., groups=C)`` computes the same; XLA on CPU takes tens of seconds to compile a
convolution with hundreds of feature groups (MobileNet-style backbones), this compiles at once and runs
as fast.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, stride: Sequence[int] = (1, 1),
                     pad: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1)) -> jax.Array:
    """Convolution with one input channel per group (kernel (kh, kw, 1, C * m)) as a sum of shifted products.

    Equals ``layers.conv2d(..., groups=C)`` on an NHWC ``x`` with C channels.
    """
    kh, kw, _, c_out = kernel.shape
    if c_out != x.shape[-1]:  # channel multiplier m: output o reads input channel o // m
        x = jnp.repeat(x, c_out // x.shape[-1], axis=-1)
    x = jnp.pad(x, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (0, 0)))
    out_h = (x.shape[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (x.shape[2] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = None
    for i in range(kh):
        for j in range(kw):
            top, left = i * dilation[0], j * dilation[1]
            patch = jax.lax.slice(x, (0, top, left, 0),
                                  (x.shape[0], top + (out_h - 1) * stride[0] + 1,
                                   left + (out_w - 1) * stride[1] + 1, c_out), (1, stride[0], stride[1], 1))
            term = patch * kernel[i, j, 0]
            y = term if y is None else y + term
    return y if bias is None else y + bias
