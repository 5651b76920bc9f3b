"""One builder per supported Caffe layer type: ``(layer, bottom shapes) -> BuiltLayer``.

A builder checks the layer's settings against its bottoms (jaxviz layout, batch 1) and returns the
layer's pure forward function with the shapes of its parameters, so that ``build_network`` can infer
every top shape before the first call. ``LAYER_BUILDERS`` lists the supported types.

Inner products on a 4-D blob flatten NHWC; their weight rows are reordered C,H,W -> H,W,C when the blobs
are converted (``weights_convert.network.blobs``), so nothing is transposed at run time.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxviz.models import layers
from weights_convert.errors import ModelMismatchError, UnsupportedLayerError
from weights_convert.netspec import ConvParams, LayerSpec, conv_params, first, lrn_params, pool_params, repeated
from weights_convert.network.axes import caffe_reshape, caffe_shape, from_caffe_order, layout_axis, to_caffe_order
from weights_convert.network.depthwise import depthwise_conv2d
from weights_convert.network.graph import Array, LayerFn, LayerParams, Shape

# Shape inference runs at batch 1; a Reshape whose first dim is a literal 1 is read as "the batch".
BUILD_BATCH = 1


@dataclasses.dataclass(frozen=True)
class BuiltLayer:
    """What a layer builder returns: the pure forward function and the shapes of its parameters."""

    fn: LayerFn
    param_shapes: Mapping[str, Shape] = dataclasses.field(default_factory=dict)


def _one_bottom(layer: LayerSpec, bottoms: Sequence[Shape], rank: int | None = None) -> Shape:
    if len(bottoms) != 1 or len(layer.tops) != 1:
        raise UnsupportedLayerError(f"{layer.type} takes one bottom and one top, got "
                                    f"{len(bottoms)} and {len(layer.tops)}")
    if rank is not None and len(bottoms[0]) != rank:
        raise ModelMismatchError(f"{layer.type} needs a {rank}-D bottom, got Caffe shape "
                                 f"{caffe_shape(bottoms[0])}")
    return bottoms[0]


def _check_axis_one(layer: LayerSpec, param: str) -> None:
    axis = first(layer.param(param), "axis", 1)
    if axis != 1:
        raise UnsupportedLayerError(f"{param}.axis {axis} is not supported (only 1)")


def _conv_setup(layer: LayerSpec, bottoms: Sequence[Shape]) -> tuple[ConvParams, int, dict[str, Shape]]:
    """(settings, input channels, parameter shapes) of a Convolution or Deconvolution layer, checked."""
    c_in = _one_bottom(layer, bottoms, 4)[-1]
    _check_axis_one(layer, "convolution_param")
    p = conv_params(layer)
    if c_in % p.group or p.num_output % p.group:
        raise ModelMismatchError(f"{c_in} input and {p.num_output} output channels do not split into "
                                 f"{p.group} groups")
    shapes = {"kernel": (*p.kernel, c_in // p.group, p.num_output)}
    if p.bias_term:
        shapes["bias"] = (p.num_output,)
    return p, c_in, shapes


def _build_convolution(layer: LayerSpec, bottoms: Sequence[Shape]) -> BuiltLayer:
    """Convolution (groups, stride, padding, dilation) on an NHWC bottom."""
    p, c_in, shapes = _conv_setup(layer, bottoms)
    depthwise = p.group > 1 and p.group == c_in

    def fn(params: LayerParams, xs: tuple[Array, ...]) -> tuple[Array, ...]:
        if depthwise:
            return (depthwise_conv2d(xs[0], params["kernel"], params.get("bias"), p.stride, p.pad, p.dilation),)
        return (layers.conv2d(xs[0], params["kernel"], params.get("bias"), p.stride, p.pad, p.dilation,
                              p.group),)
    return BuiltLayer(fn, shapes)


def _build_deconvolution(layer: LayerSpec, bottoms: Sequence[Shape]) -> BuiltLayer:
    """Deconvolution (the adjoint of convolution) with the flipped forward kernel of ``layouts``."""
    p, _, shapes = _conv_setup(layer, bottoms)

    def fn(params: LayerParams, xs: tuple[Array, ...]) -> tuple[Array, ...]:
        return (layers.deconv2d(xs[0], params["kernel"], params.get("bias"), p.stride, p.pad, p.dilation,
                                p.group),)
    return BuiltLayer(fn, shapes)


def _build_inner_product(layer: LayerSpec, bottoms: Sequence[Shape]) -> BuiltLayer:
    """InnerProduct over all axes after the batch (NHWC flatten; weights reordered to match)."""
    shape = _one_bottom(layer, bottoms)
    msg = layer.param("inner_product_param")
    axis = int(first(msg, "axis", 1))
    if axis % len(shape) != 1:
        raise UnsupportedLayerError(f"inner_product_param.axis {axis} is not supported (only 1)")
    num_output = first(msg, "num_output")
    if num_output is None:
        raise UnsupportedLayerError("inner_product_param.num_output is missing")
    shapes = {"kernel": (math.prod(shape[1:]), int(num_output))}
    if first(msg, "bias_term", True):
        shapes["bias"] = (int(num_output),)

    def fn(params: LayerParams, xs: tuple[Array, ...]) -> tuple[Array, ...]:
        x = xs[0]
        y = x.reshape(x.shape[0], -1) @ params["kernel"]
        return (y + params["bias"] if "bias" in params else y,)
    return BuiltLayer(fn, shapes)


def _build_relu(layer: LayerSpec, bottoms: Sequence[Shape]) -> BuiltLayer:
    """ReLU, leaky when ``negative_slope`` is set."""
    _one_bottom(layer, bottoms)
    slope = float(first(layer.param("relu_param"), "negative_slope", 0.0))
    return BuiltLayer(lambda params, xs: (layers.leaky_relu(xs[0], slope),))


def _channel_broadcast(v: Array, ndim: int) -> Array:
    """A per-channel vector shaped to broadcast against a blob of rank ``ndim`` in jaxviz layout."""
    return v if ndim in (2, 4) else v.reshape((-1,) + (1,) * (ndim - 2))


def _build_prelu(layer: LayerSpec, bottoms: Sequence[Shape]) -> BuiltLayer:
    """PReLU with one learned slope per channel, or one shared slope."""
    shape = _one_bottom(layer, bottoms)
    if len(shape) < 2:
        raise ModelMismatchError(f"PReLU needs a bottom with a channel axis, got {shape}")
    shared = bool(first(layer.param("prelu_param"), "channel_shared", False))
    channels = 1 if shared else caffe_shape(shape)[1]

    def fn(params: LayerParams, xs: tuple[Array, ...]) -> tuple[Array, ...]:
        x = xs[0]
        slope = _channel_broadcast(params["slope"], x.ndim)
        return (jnp.where(x > 0, x, slope * x),)
    return BuiltLayer(fn, {"slope": (channels,)})


def _build_lrn(layer: LayerSpec, bottoms: Sequence[Shape]) -> BuiltLayer:
    """LRN across channels or within each channel."""
    _one_bottom(layer, bottoms, 4)
    p = lrn_params(layer)
    if p.local_size % 2 == 0:
        raise UnsupportedLayerError(f"LRN local_size {p.local_size} must be odd (as in Caffe)")
    if p.region == "ACROSS_CHANNELS":
        return BuiltLayer(lambda params, xs: (layers.lrn_across_channels(xs[0], p.local_size, p.alpha,
                                                                         p.beta, p.k),))
    if p.region == "WITHIN_CHANNEL":
        # Caffe's within-channel LRN is built from a power layer with shift 1: ``k`` does not apply.
        return BuiltLayer(lambda params, xs: (layers.lrn_within_channel(xs[0], p.local_size, p.alpha,
                                                                        p.beta),))
    raise UnsupportedLayerError(f"LRN norm_region {p.region} is not supported")


def _build_pooling(layer: LayerSpec, bottoms: Sequence[Shape]) -> BuiltLayer:
    """MAX/AVE pooling with Caffe's ceil-rounded output size; global pooling over the whole map."""
    _one_bottom(layer, bottoms, 4)
    p = pool_params(layer)
    pool = layers.max_pool if p.method == "MAX" else layers.ave_pool
    if p.global_pooling:
        if p.pad != (0, 0):
            raise UnsupportedLayerError("global pooling with padding is not supported (Caffe rejects it)")
        return BuiltLayer(lambda params, xs: (pool(xs[0], xs[0].shape[1:3], (1, 1)),))
    return BuiltLayer(lambda params, xs: (pool(xs[0], p.kernel, p.stride, p.pad),))


def _identity(layer: LayerSpec, bottoms: Sequence[Shape]) -> BuiltLayer:
    """Dropout at inference (Caffe scales during training), Split (one bottom copied to every top)."""
    if len(bottoms) != 1:
        raise UnsupportedLayerError(f"{layer.type} takes one bottom, got {len(bottoms)}")
    n = len(layer.tops)
    return BuiltLayer(lambda params, xs: (xs[0],) * n)


def _elementwise(op: Callable[[Array], Array]) -> Callable[[LayerSpec, Sequence[Shape]], BuiltLayer]:
    def build(layer: LayerSpec, bottoms: Sequence[Shape]) -> BuiltLayer:
        """A parameter-free elementwise layer."""
        _one_bottom(layer, bottoms)
        return BuiltLayer(lambda params, xs: (op(xs[0]),))
    return build


def _build_softmax(layer: LayerSpec, bottoms: Sequence[Shape]) -> BuiltLayer:
    """Softmax over Caffe's ``axis`` (default 1, the channels)."""
    shape = _one_bottom(layer, bottoms)
    axis = layout_axis(int(first(layer.param("softmax_param"), "axis", 1)), len(shape))
    return BuiltLayer(lambda params, xs: (jax.nn.softmax(xs[0], axis=axis),))


def _build_reshape(layer: LayerSpec, bottoms: Sequence[Shape]) -> BuiltLayer:
    """Reshape with Caffe's semantics on the Caffe-ordered (C, H, W) view of the blob."""
    shape = _one_bottom(layer, bottoms)
    msg = layer.param("reshape_param")
    dims = [int(d) for d in repeated(first(msg, "shape", {}), "dim")]
    axis, num_axes = int(first(msg, "axis", 0)), int(first(msg, "num_axes", -1))
    start = axis + len(shape) + 1 if axis < 0 else axis
    if start == 0 and dims and dims[0] == BUILD_BATCH:
        # Deploy files write the batch as a literal 1; read it as "copy the batch" so any batch size runs.
        dims[0] = 0
    caffe_reshape(caffe_shape(shape), dims, axis, num_axes)  # reports a bad reshape at build time

    def fn(params: LayerParams, xs: tuple[Array, ...]) -> tuple[Array, ...]:
        x = to_caffe_order(xs[0])
        return (from_caffe_order(x.reshape(caffe_reshape(x.shape, dims, axis, num_axes))),)
    return BuiltLayer(fn)


def _build_flatten(layer: LayerSpec, bottoms: Sequence[Shape]) -> BuiltLayer:
    """Flatten Caffe axes [axis, end_axis] in Caffe's C, H, W order."""
    shape = _one_bottom(layer, bottoms)
    msg = layer.param("flatten_param")
    axis, end_axis = int(first(msg, "axis", 1)), int(first(msg, "end_axis", -1))
    ndim = len(shape)
    start, end = axis % ndim, end_axis % ndim
    if start > end:
        raise UnsupportedLayerError(f"flatten axis {axis} comes after end_axis {end_axis}")

    def fn(params: LayerParams, xs: tuple[Array, ...]) -> tuple[Array, ...]:
        x = to_caffe_order(xs[0])
        new = x.shape[:start] + (math.prod(x.shape[start:end + 1]),) + x.shape[end + 1:]
        return (from_caffe_order(x.reshape(new)),)
    return BuiltLayer(fn)


def _build_concat(layer: LayerSpec, bottoms: Sequence[Shape]) -> BuiltLayer:
    """Concat along Caffe's ``axis`` (or legacy ``concat_dim``), default the channels."""
    if not bottoms or len(layer.tops) != 1 or len({len(s) for s in bottoms}) != 1:
        raise ModelMismatchError(f"Concat needs bottoms of one rank and one top, got Caffe shapes "
                                 f"{[caffe_shape(s) for s in bottoms]}")
    msg = layer.param("concat_param")
    caffe_axis = int(first(msg, "axis", first(msg, "concat_dim", 1)))
    axis = layout_axis(caffe_axis, len(bottoms[0]))
    return BuiltLayer(lambda params, xs: (jnp.concatenate(xs, axis=axis),))


def _build_eltwise(layer: LayerSpec, bottoms: Sequence[Shape]) -> BuiltLayer:
    """Eltwise SUM (with optional coefficients), PROD or MAX of same-shaped bottoms."""
    if len(bottoms) < 2 or len(layer.tops) != 1 or len(set(bottoms)) != 1:
        raise ModelMismatchError(f"Eltwise needs two or more bottoms of one shape, got Caffe shapes "
                                 f"{[caffe_shape(s) for s in bottoms]}")
    msg = layer.param("eltwise_param")
    op = first(msg, "operation", "SUM")
    coeffs = [float(c) for c in repeated(msg, "coeff")]
    if coeffs and len(coeffs) != len(bottoms):
        raise ModelMismatchError(f"Eltwise has {len(coeffs)} coefficients for {len(bottoms)} bottoms")
    if op == "SUM":
        coeffs = coeffs or [1.0] * len(bottoms)
        return BuiltLayer(lambda params, xs: (sum(c * x for c, x in zip(coeffs, xs)),))
    if coeffs:
        raise UnsupportedLayerError(f"Eltwise coefficients apply only to SUM, not {op}")
    if op == "PROD":
        return BuiltLayer(lambda params, xs: (functools.reduce(jnp.multiply, xs),))
    if op == "MAX":
        return BuiltLayer(lambda params, xs: (functools.reduce(jnp.maximum, xs),))
    raise UnsupportedLayerError(f"Eltwise operation {op} is not supported")


LAYER_BUILDERS: dict[str, Callable[[LayerSpec, Sequence[Shape]], BuiltLayer]] = {
    "Convolution": _build_convolution,
    "Deconvolution": _build_deconvolution,
    "InnerProduct": _build_inner_product,
    "ReLU": _build_relu,
    "PReLU": _build_prelu,
    "Sigmoid": _elementwise(jax.nn.sigmoid),
    "TanH": _elementwise(jnp.tanh),
    "AbsVal": _elementwise(jnp.abs),
    "LRN": _build_lrn,
    "Pooling": _build_pooling,
    "Dropout": _identity,
    "Split": _identity,
    "Softmax": _build_softmax,
    "Reshape": _build_reshape,
    "Flatten": _build_flatten,
    "Concat": _build_concat,
    "Eltwise": _build_eltwise,
}
