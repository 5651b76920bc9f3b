"""Flax modules for Caffe's parametrized layers, with parameters named and laid out as converted.

Parameter layouts (what ``weights_convert.layouts`` produces from Caffe blobs):
- ``CaffeConv``: ``kernel`` HWIO (kh, kw, C_in / group, C_out), ``bias`` (C_out,).
- ``CaffeDeconv``: ``kernel`` is the equivalent forward-convolution kernel, HWIO (kh, kw, C_in / group,
  C_out), spatially flipped; ``bias`` (C_out,).
- ``CaffeDense``: ``kernel`` (in, out) with rows in the H, W, C order of an NHWC flatten; ``bias`` (out,).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxviz.models import layers

_weight_init = nn.initializers.normal(0.01)
_bias_init = nn.initializers.zeros


class CaffeConv(nn.Module):
    """Caffe Convolution (groups, padding, stride, dilation) on NHWC inputs."""

    features: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    group: int = 1
    use_bias: bool = True

    def _op(self, x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
        return layers.conv2d(x, kernel, bias, self.stride, self.pad, self.dilation, self.group)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c_in = x.shape[-1]
        if c_in % self.group or self.features % self.group:
            raise ValueError(f"{self.name}: {c_in} input and {self.features} output channels "
                             f"do not split into {self.group} groups")
        kernel = self.param("kernel", _weight_init, (*self.kernel, c_in // self.group, self.features))
        bias = self.param("bias", _bias_init, (self.features,)) if self.use_bias else None
        return self._op(x, kernel, bias)


class CaffeDeconv(CaffeConv):
    """Caffe Deconvolution (adjoint of convolution, ``pad`` cropped from the full output) on NHWC.

    Same parameters as ``CaffeConv``: the kernel is the equivalent forward convolution's, flipped.
    """

    def _op(self, x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
        return layers.deconv2d(x, kernel, bias, self.stride, self.pad, self.dilation, self.group)


class CaffeDense(nn.Module):
    """Caffe InnerProduct: flattens NHWC input in H, W, C order, then ``x @ kernel + bias``."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = layers.flatten_nhwc(x) if x.ndim > 2 else x
        kernel = self.param("kernel", _weight_init, (x.shape[-1], self.features))
        bias = self.param("bias", _bias_init, (self.features,)) if self.use_bias else None
        return layers.dense(x, kernel, bias)
