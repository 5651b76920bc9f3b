"""Networks built from a Caffe deploy prototxt (a ``NetSpec``) instead of written out as modules.

``build_network(spec)`` turns every layer into a small pure function of ``(layer_params, bottoms)`` and
infers all blob shapes (``jax.eval_shape``) once, at build time, so that a layer jaxviz cannot run, a
missing input shape or a wiring mistake is reported then, naming the file and layer, not at the first
call. ``params_from_blobs(spec)`` converts the Caffe blobs to the parameter layouts of
``jaxviz.models.modules``; ``from_caffe(prototxt, caffemodel)`` does both in one call.

Blob layout: a 4-D Caffe blob (N, C, H, W) is held NHWC, like the explicit modules; blobs of any other
rank keep Caffe's axis order. Layers whose meaning depends on axis order (Reshape, Flatten) work on the
Caffe-ordered view and transpose back, so they are exact for any input. Inner products on a 4-D blob
flatten NHWC and get their weight rows reordered C,H,W -> H,W,C instead (no transpose at run time).

Taps, as for ``CaffeNet``: ``"<blob>"`` is the blob's value once the forward pass is done (after any
in-place layers), ``"<blob>:pre"`` the value first written, before in-place layers (offered only for
blobs that in-place layers modify). Only the layers up to the deepest requested tap run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.models import layers
from jaxviz.models._taps import resolve_taps
from weights_convert import layouts
from weights_convert.errors import ConversionError, ModelMismatchError, UnsupportedLayerError
from weights_convert.netspec import (ConvParams, LayerSpec, NetSpec, conv_params, first, lrn_params, pool_params,
                                     repeated)

Array = jax.Array
LayerParams = Mapping[str, Array]
Params = dict[str, dict[str, Any]]
LayerFn = Callable[[LayerParams, tuple[Array, ...]], tuple[Array, ...]]
Shape = tuple[int, ...]

# Layers a deploy network runs without: data sources, scoring, and Input (its tops are the net's inputs).
SKIPPED_TYPES = frozenset({
    "Data", "HDF5Data", "HDF5Output", "ImageData", "MemoryData", "WindowData", "DummyData", "Accuracy",
    "Silence", "Input",
})

# Shape inference runs at batch 1; a Reshape whose first dim is a literal 1 is read as "the batch".
_BUILD_BATCH = 1


# ----- the built network -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BuiltLayer:
    """What a layer builder returns: the pure forward function and the shapes of its parameters."""

    fn: LayerFn
    param_shapes: Mapping[str, Shape] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Step:
    """One layer of a built network, with the shapes (batch 1, jaxviz layout) seen at build time."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    fn: LayerFn
    param_shapes: Mapping[str, Shape]
    bottom_shapes: tuple[Shape, ...]
    top_shapes: tuple[Shape, ...]


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity, so it can be a static jit argument
class PrototxtNet:
    """A Caffe network built from a NetSpec: ``apply(params, x, taps)`` is pure, so it jits and vmaps.

    ``x`` is one NHWC float array (a (N, C) array for a vector input) or a dict input name -> array.
    """

    name: str
    source: str | None
    inputs: Mapping[str, Shape]  # per-example shapes, jaxviz layout (H, W, C) or (C,)
    steps: tuple[Step, ...]
    tap_names: tuple[str, ...]  # forward order
    outputs: tuple[str, ...]  # Caffe's net outputs: blobs no layer consumes; the default taps
    _tap_ready: Mapping[str, int]  # tap -> index of the step after which its value is final

    @property
    def input_shape(self) -> Shape:
        """The per-example input shape (H, W, C) of a single-input network."""
        if len(self.inputs) != 1:
            raise ValueError(f"{self.name}: has inputs {list(self.inputs)}; use .inputs")
        return next(iter(self.inputs.values()))

    @property
    def input_names(self) -> tuple[str, ...]:
        """The input blob names in declaration order."""
        return tuple(self.inputs)

    @property
    def param_shapes(self) -> dict[str, dict[str, Shape]]:
        """Shapes of every parameter, by layer then name (``kernel``, ``bias``, ``slope``)."""
        return {s.name: dict(s.param_shapes) for s in self.steps if s.param_shapes}

    def tap_shapes(self) -> dict[str, Shape]:
        """Per-example shape of every tap (jaxviz layout), at the declared input size."""
        shapes: dict[str, Shape] = {}
        for step in self.steps:
            for top, shape in zip(step.tops, step.top_shapes):
                if f"{top}:pre" in self._tap_ready and f"{top}:pre" not in shapes:
                    shapes[f"{top}:pre"] = shape[1:]
                shapes[top] = shape[1:]
        return {name: shapes[name] for name in self.tap_names}

    def layer_taps(self) -> dict[str, str]:
        """Layer name -> the tap holding its (first) top's output; layers between two in-place writers of
        one blob have no tap and are left out."""
        first_writer: dict[str, int] = {}
        last_writer: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            for top in step.tops:
                first_writer.setdefault(top, i)
                last_writer[top] = i
        out = {}
        for i, step in enumerate(self.steps):
            if not step.tops:
                continue
            top = step.tops[0]
            if last_writer[top] == i:
                out[step.name] = top
            elif first_writer[top] == i:
                out[step.name] = f"{top}:pre"
        return out

    def init(self, rng: Array | int = 0) -> Params:
        """Random parameters in Caffe's default style (weights N(0, 0.01), zero biases, PReLU slopes 0.25).

        ``rng`` is a JAX key or an int seed; numbers come from numpy (threefry compiles for seconds per shape).
        """
        seed = rng if isinstance(rng, int) else np.asarray(jax.random.key_data(rng)).ravel().tolist()
        gen = np.random.default_rng(seed)
        params: Params = {}
        for step in self.steps:
            if step.param_shapes:
                params[step.name] = {pname: _init_value(pname, shape, gen)
                                     for pname, shape in step.param_shapes.items()}
        return params

    def apply(self, params: Mapping[str, Any], x: Array | Mapping[str, Array],
              taps: Sequence[str] | str | None = None) -> dict[str, Array]:
        """The requested taps (default: the network outputs) for input ``x``; stops at the deepest tap.

        Compiled as one XLA program per tap set and input shape (op-by-op dispatch of a deep net costs
        a compilation per op); inside an outer jit/vmap/grad it simply inlines.
        """
        wanted = resolve_taps(self.outputs if taps is None else taps, self.tap_names, self.name)
        return _jitted_apply(self, params, x, tuple(sorted(wanted)))

    def _apply(self, params: Mapping[str, Any], x: Array | Mapping[str, Array],
               wanted: tuple[str, ...]) -> dict[str, Array]:
        params = _unwrap_params(params, self.steps)
        blobs = self._input_blobs(x)
        stop = max(self._tap_ready[t] for t in wanted)
        values: dict[str, Array] = {}
        for step in self.steps[:stop + 1]:
            layer_params = params.get(step.name)
            if step.param_shapes and layer_params is None:
                raise ValueError(f"{self.name}: params have no entry for layer {step.name!r} "
                                 f"({step.type}); layers with params: {list(self.param_shapes)}")
            outs = step.fn(layer_params or {}, tuple(blobs[b] for b in step.bottoms))
            for top, value in zip(step.tops, outs):
                pre = f"{top}:pre"
                if pre in wanted and pre not in values:
                    values[pre] = value
                blobs[top] = value
        for name in wanted:
            if not name.endswith(":pre"):
                values[name] = blobs[name]
        return values

    __call__ = apply

    def _input_blobs(self, x: Array | Mapping[str, Array]) -> dict[str, Array]:
        """The input arrays by blob name, checked against the declared channel counts."""
        if not isinstance(x, Mapping):
            if len(self.inputs) != 1:
                raise ValueError(f"{self.name}: has inputs {list(self.inputs)}; pass a dict name -> array")
            x = {next(iter(self.inputs)): x}
        missing = [n for n in self.inputs if n not in x]
        if missing:
            raise ValueError(f"{self.name}: missing input(s) {missing}; inputs are {list(self.inputs)}")
        blobs = {}
        for name, shape in self.inputs.items():
            value = jnp.asarray(x[name])
            if not jnp.issubdtype(value.dtype, jnp.floating):
                value = value.astype(jnp.float32)
            if value.ndim != len(shape) + 1 or (value.ndim == 4 and value.shape[-1] != shape[-1]) \
                    or (value.ndim == 2 and value.shape[-1] != shape[-1]):
                raise ValueError(f"{self.name}: input {name!r} should be (N, {', '.join(map(str, shape))}) "
                                 f"(spatial size may differ), got {value.shape}")
            blobs[name] = value
        return blobs


_jitted_apply = jax.jit(PrototxtNet._apply, static_argnums=(0, 3))


def _init_value(name: str, shape: Shape, gen: np.random.Generator) -> np.ndarray:
    """One initial parameter array: kernels N(0, 0.01), PReLU slopes 0.25, biases 0."""
    if name == "kernel":
        return (0.01 * gen.standard_normal(shape)).astype(np.float32)
    return np.full(shape, 0.25 if name == "slope" else 0.0, np.float32)


def _unwrap_params(params: Mapping[str, Any], steps: Sequence[Step]) -> Mapping[str, Any]:
    """Accept both ``params`` and linen-style ``{"params": params}``."""
    if set(params) == {"params"} and not any(s.name == "params" for s in steps):
        return params["params"]
    return params


# ----- Caffe axis order vs the NHWC layout ------------------------------------------------------------

def to_caffe_order(x: Array) -> Array:
    """A blob in Caffe's axis order (NHWC -> NCHW for 4-D blobs, unchanged otherwise)."""
    return jnp.transpose(x, (0, 3, 1, 2)) if x.ndim == 4 else x


def from_caffe_order(x: Array) -> Array:
    """Inverse of ``to_caffe_order``: a Caffe-ordered blob in jaxviz layout."""
    return jnp.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x


def caffe_shape(shape: Sequence[int]) -> Shape:
    """The Caffe-order shape of a blob held with jaxviz ``shape``."""
    shape = tuple(shape)
    return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape


def jaxviz_shape(shape: Sequence[int]) -> Shape:
    """The jaxviz-layout shape of a blob whose Caffe shape is ``shape``."""
    shape = tuple(int(s) for s in shape)
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else shape


def layout_axis(axis: int, ndim: int) -> int:
    """The array axis that holds Caffe axis ``axis`` (negative counts from the end) of an ``ndim`` blob."""
    if not -ndim <= axis < ndim:
        raise UnsupportedLayerError(f"axis {axis} is out of range for a {ndim}-D blob")
    axis %= ndim
    return (0, 3, 1, 2)[axis] if ndim == 4 else axis


def caffe_reshape(shape: Sequence[int], dims: Sequence[int], axis: int = 0, num_axes: int = -1) -> Shape:
    """Caffe Reshape's output shape: ``dims`` replace axes [axis, axis + num_axes); 0 copies, -1 infers."""
    shape = tuple(int(s) for s in shape)
    start = axis + len(shape) + 1 if axis < 0 else axis
    end = len(shape) if num_axes == -1 else start + num_axes
    if not 0 <= start <= end <= len(shape):
        raise UnsupportedLayerError(f"reshape axis {axis}, num_axes {num_axes} do not fit a blob of shape {shape}")
    if list(dims).count(-1) > 1:
        raise UnsupportedLayerError(f"reshape dims {list(dims)} have more than one -1")
    middle = [shape[start + i] if d == 0 else int(d) for i, d in enumerate(dims)]
    out = list(shape[:start]) + middle + list(shape[end:])
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or math.prod(shape) % known:
            raise UnsupportedLayerError(f"cannot reshape {shape} to {list(dims)}")
        out[out.index(-1)] = math.prod(shape) // known
    if math.prod(out) != math.prod(shape):
        raise UnsupportedLayerError(f"reshape of {shape} ({math.prod(shape)} values) to {tuple(out)} "
                                    f"changes the element count")
    return tuple(out)


# ----- layer builders: (layer, bottom shapes) -> BuiltLayer ---------------------------------------------

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


def depthwise_conv2d(x: Array, kernel: Array, bias: Array | None, stride: Sequence[int] = (1, 1),
                     pad: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1)) -> Array:
    """Convolution with one input channel per group (kernel (kh, kw, 1, C * m)) as a sum of shifted products.

    Equals ``layers.conv2d(..., groups=C)``; XLA on CPU takes tens of seconds to compile a convolution
    with hundreds of feature groups, this compiles at once and runs as fast.
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
    if start == 0 and dims and dims[0] == _BUILD_BATCH:
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


# ----- building ---------------------------------------------------------------------------------------

def is_training_only(layer: LayerSpec) -> bool:
    """Whether a deploy network leaves this layer out (data sources, losses, accuracy, TRAIN-phase layers)."""
    return (layer.phase == "TRAIN" or layer.type in SKIPPED_TYPES or layer.type.endswith("Loss"))


def _needed_layers(layers_: Sequence[LayerSpec], outputs: Sequence[str]) -> list[LayerSpec]:
    """The layers that ``outputs`` depend on (walking back; in-place writers keep their blob needed)."""
    needed, kept = set(outputs), []
    for layer in reversed(layers_):
        if needed & set(layer.tops):
            kept.append(layer)
            needed -= set(layer.tops) - set(layer.bottoms)
            needed |= set(layer.bottoms)
    return kept[::-1]


def _declared_inputs(spec: NetSpec, deploy: Sequence[LayerSpec],
                     input_shapes: Mapping[str, Sequence[int]] | None) -> dict[str, Shape]:
    """Caffe-order input shapes (batch 1): declared ones, overridden by ``input_shapes``; data-layer tops
    that a kept layer reads count as inputs too (a train/test prototxt), and need a shape."""
    produced = {t for l in deploy for t in l.tops}
    read = [b for l in deploy for b in l.bottoms if b not in produced]
    names = list(spec.inputs) + [b for b in dict.fromkeys(read) if b not in spec.inputs]
    overrides = dict(input_shapes or {})
    unknown = [n for n in overrides if n not in names]
    if unknown:
        raise ValueError(f"input_shapes names {unknown}, which are not inputs of the net ({names})")
    inputs: dict[str, Shape] = {}
    for name in names:
        shape = overrides.get(name, spec.inputs.get(name))
        if shape is None:
            if name in read:
                raise ConversionError(f"the shape of input {name!r} is not declared; pass input_shapes",
                                      file=spec.source)
            continue
        shape = tuple(int(s) for s in shape)
        inputs[name] = (_BUILD_BATCH,) + shape[1:]
    return inputs


def build_network(spec: NetSpec, *, input_shapes: Mapping[str, Sequence[int]] | None = None,
                  outputs: Sequence[str] | None = None) -> PrototxtNet:
    """A runnable network from a NetSpec; every layer is checked and every shape inferred here.

    ``input_shapes`` (Caffe N, C, H, W order) replaces declared input shapes; ``outputs`` keeps only the
    layers those blobs depend on (e.g. a backbone before a layer jaxviz does not support).
    """
    deploy = [l for l in spec.layers if not is_training_only(l)]
    if outputs is not None:
        deploy = _needed_layers(deploy, outputs)
    for layer in deploy:  # all unsupported types first, before any shape work
        if layer.type not in LAYER_BUILDERS:
            raise UnsupportedLayerError(
                f"layer type {layer.type!r} is not supported; supported types: {', '.join(LAYER_BUILDERS)}",
                file=spec.source, layer=layer.name)
    caffe_inputs = _declared_inputs(spec, deploy, input_shapes)
    shapes: dict[str, Shape] = {name: jaxviz_shape(s) for name, s in caffe_inputs.items()}
    steps = []
    for layer in deploy:
        try:
            missing = [b for b in layer.bottoms if b not in shapes]
            if missing:
                raise ModelMismatchError(f"bottom blob(s) {missing} are produced by no earlier layer "
                                         f"and are not inputs")
            bottom_shapes = tuple(shapes[b] for b in layer.bottoms)
            built = LAYER_BUILDERS[layer.type](layer, bottom_shapes)
            top_shapes = _infer_tops(built, bottom_shapes)
            if len(top_shapes) != len(layer.tops):
                raise ModelMismatchError(f"{layer.type} makes {len(top_shapes)} outputs but has "
                                         f"{len(layer.tops)} tops")
        except ConversionError as err:
            raise err.located(file=spec.source, layer=layer.name) from None
        shapes.update(zip(layer.tops, top_shapes))
        steps.append(Step(layer.name, layer.type, tuple(layer.bottoms), tuple(layer.tops), built.fn,
                          dict(built.param_shapes), bottom_shapes, top_shapes))
    tap_names, ready = _taps(steps)
    if not steps:
        raise ConversionError("the network has no layers to run", file=spec.source)
    return PrototxtNet(name=spec.name or (os.path.basename(spec.source) if spec.source else "net"),
                       source=spec.source,
                       inputs={n: jaxviz_shape(s)[1:] for n, s in caffe_inputs.items()},
                       steps=tuple(steps), tap_names=tap_names, outputs=_net_outputs(steps),
                       _tap_ready=ready)


def _infer_tops(built: BuiltLayer, bottom_shapes: Sequence[Shape]) -> tuple[Shape, ...]:
    """Top shapes by abstract evaluation; a shape error becomes a ModelMismatchError."""
    params = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in built.param_shapes.items()}
    xs = tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in bottom_shapes)
    try:
        outs = jax.eval_shape(built.fn, params, xs)
    except (TypeError, ValueError) as err:
        raise ModelMismatchError(f"the layer cannot run on bottoms of shape {list(bottom_shapes)}: "
                                 f"{str(err).splitlines()[0]}") from None
    tops = tuple(tuple(int(d) for d in o.shape) for o in outs)
    for shape in tops:
        if min(shape, default=1) < 1:
            raise ModelMismatchError(f"the output would have shape {shape}: the input is too small")
    return tops


def _taps(steps: Sequence[Step]) -> tuple[tuple[str, ...], dict[str, int]]:
    """Tap names in forward order and the step after which each is final."""
    first_writer: dict[str, int] = {}
    last_writer: dict[str, int] = {}
    for i, step in enumerate(steps):
        for top in step.tops:
            first_writer.setdefault(top, i)
            last_writer[top] = i
    ready: dict[str, int] = {}
    for blob, i in first_writer.items():
        if last_writer[blob] != i:
            ready[f"{blob}:pre"] = i
        ready[blob] = last_writer[blob]
    # Stable sort keeps ":pre" before its blob and file order among taps ready at the same step.
    order = sorted(ready, key=lambda t: ready[t])
    return tuple(order), ready


def _net_outputs(steps: Sequence[Step]) -> tuple[str, ...]:
    """Caffe's rule: blobs left unconsumed once every layer ran (in-place tops count as fresh)."""
    available: dict[str, None] = {}
    for step in steps:
        for b in step.bottoms:
            available.pop(b, None)
        for t in step.tops:
            available[t] = None
    return tuple(available)


# ----- parameters from Caffe blobs ----------------------------------------------------------------------

def _blobs_of(layer: LayerSpec, step: Step) -> tuple[np.ndarray, ...]:
    want = len(step.param_shapes) if step.type != "PReLU" else 1
    if len(layer.blobs) != want:
        raise ModelMismatchError(f"{layer.type} layer expects {want} blob(s) "
                                 f"({', '.join(step.param_shapes)}), found {len(layer.blobs)}",
                                 blob=min(len(layer.blobs), want))
    return layer.blobs


def _bias(layer: LayerSpec, step: Step, blobs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    if "bias" not in step.param_shapes:
        return {}
    return {"bias": layouts.bias_vector(blobs[1], step.param_shapes["bias"][0], layer=layer.name, index=1)}


def _convert_convolution(layer: LayerSpec, step: Step) -> dict[str, np.ndarray]:
    """[O, I/g, kh, kw] -> HWIO."""
    blobs = _blobs_of(layer, step)
    kh, kw, cin_g, c_out = step.param_shapes["kernel"]
    w = layouts.checked_blob(blobs[0], (c_out, cin_g, kh, kw), layer=layer.name, index=0)
    return {"kernel": layouts.conv_kernel(w, layer=layer.name), **_bias(layer, step, blobs)}


def _convert_deconvolution(layer: LayerSpec, step: Step) -> dict[str, np.ndarray]:
    """[I, O/g, kh, kw] -> flipped forward HWIO."""
    blobs = _blobs_of(layer, step)
    kh, kw, cin_g, c_out = step.param_shapes["kernel"]
    group = conv_params(layer).group
    w = layouts.checked_blob(blobs[0], (cin_g * group, c_out // group, kh, kw), layer=layer.name, index=0)
    return {"kernel": layouts.deconv_kernel(w, group, layer=layer.name), **_bias(layer, step, blobs)}


def _convert_inner_product(layer: LayerSpec, step: Step) -> dict[str, np.ndarray]:
    """[out, in] (or [in, out] with ``transpose``) -> (in, out), rows in H, W, C order for a map bottom."""
    blobs = _blobs_of(layer, step)
    n_in, n_out = step.param_shapes["kernel"]
    if first(layer.param("inner_product_param"), "transpose", False):
        w = layouts.checked_blob(blobs[0], (n_in, n_out), layer=layer.name, index=0).T
    else:
        w = layouts.checked_blob(blobs[0], (n_out, n_in), layer=layer.name, index=0)
    bottom = step.bottom_shapes[0]
    chw = caffe_shape(bottom)[1:] if len(bottom) == 4 else None
    return {"kernel": layouts.inner_product_kernel(w, chw, layer=layer.name), **_bias(layer, step, blobs)}


def _convert_prelu(layer: LayerSpec, step: Step) -> dict[str, np.ndarray]:
    """One slope per channel (or one shared)."""
    blobs = _blobs_of(layer, step)
    return {"slope": layouts.checked_blob(blobs[0], step.param_shapes["slope"], layer=layer.name, index=0)}


BLOB_CONVERTERS: dict[str, Callable[[LayerSpec, Step], dict[str, np.ndarray]]] = {
    "Convolution": _convert_convolution,
    "Deconvolution": _convert_deconvolution,
    "InnerProduct": _convert_inner_product,
    "PReLU": _convert_prelu,
}


def params_from_blobs(spec: NetSpec, net: PrototxtNet | None = None, *,
                      input_shapes: Mapping[str, Sequence[int]] | None = None) -> Params:
    """Parameters ``{layer: {"kernel", "bias" | "slope"}}`` converted from the blobs in ``spec``.

    ``net`` is ``build_network(spec)`` when not given (its shapes decide the inner-product reorder).
    """
    net = build_network(spec, input_shapes=input_shapes) if net is None else net
    by_name = {l.name: l for l in spec.layers if not is_training_only(l)}
    params: Params = {}
    for step in net.steps:
        layer = by_name.get(step.name)
        if layer is None:
            raise ModelMismatchError(f"the net has a layer {step.name!r} that the spec lacks", file=spec.source)
        try:
            convert = BLOB_CONVERTERS.get(step.type)
            if convert is None:
                if layer.blobs:
                    raise ModelMismatchError(f"{layer.type} layers take no blobs, found {len(layer.blobs)}")
                continue
            converted = convert(layer, step)
            for pname, value in converted.items():
                if tuple(value.shape) != tuple(step.param_shapes[pname]):  # a converter bug, not bad input
                    raise ModelMismatchError(f"converted {pname} has shape {value.shape}, expected "
                                             f"{step.param_shapes[pname]}")
        except ConversionError as err:
            raise err.located(file=spec.source, layer=step.name) from None
        params[step.name] = converted
    return params


def from_caffe(prototxt_path: str | os.PathLike, caffemodel_path: str | os.PathLike | None = None, *,
               input_shapes: Mapping[str, Sequence[int]] | None = None,
               rng: Array | int | None = None) -> tuple[PrototxtNet, Params]:
    """``(net, params)`` from a deploy prototxt and its weights (random Caffe-style params without them)."""
    from weights_convert.caffemodel import read_caffemodel  # parsers stay optional for pure-JAX users
    from weights_convert.netspec import attach_weights
    from weights_convert.prototxt import read_prototxt

    arch = read_prototxt(prototxt_path)
    if caffemodel_path is None:
        net = build_network(arch, input_shapes=input_shapes)
        return net, net.init(0 if rng is None else rng)
    spec = attach_weights(arch, read_caffemodel(caffemodel_path))
    net = build_network(spec, input_shapes=input_shapes)
    return net, params_from_blobs(spec, net)
