"""Caffe blob layouts -> jaxviz Flax parameter layouts (numpy arrays).

Caffe stores N, C, H, W tensors; jaxviz runs NHWC. Each function here checks the blob's shape against
what the architecture expects and raises ``ModelMismatchError`` naming the layer and blob index.
The per-layer functions (``convolution_layer``, ``deconvolution_layer``, ``inner_product_layer``) serve
both the known architectures (``caffenet_params``, ``generator_params``) and prototxt-built networks
(``weights_convert.network.blobs``).
Shapes follow Caffe's own rule for legacy blobs: a blob written with the old 4-D (num, channels, height,
width) header matches when its shape, with leading 1s dropped, equals the expected one with leading 1s
dropped, e.g. an inner product's (1, 1, out, in) weights or a (1, 1, 1, out) bias.

Target layouts are those documented in ``jaxviz.models.modules``.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from jaxviz.models.caffenet import CaffeNetConfig, caffenet_tap_shapes
from jaxviz.models.generator import CONV_LAYERS, DECONV_LAYERS, FC_LAYERS, GeneratorConfig
from weights_convert.errors import ModelMismatchError

Blobs = Mapping[str, Sequence[np.ndarray]]
Params = dict[str, dict[str, np.ndarray]]


def _strip_leading_ones(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def checked_blob(blob: np.ndarray, expected: Sequence[int], *, layer: str = "?", index: int = 0) -> np.ndarray:
    """``blob`` as float32 with shape ``expected`` (legacy leading-1 shapes accepted), else ModelMismatchError."""
    blob = np.asarray(blob)
    expected = tuple(int(s) for s in expected)
    if blob.size != math.prod(expected) or _strip_leading_ones(blob.shape) != _strip_leading_ones(expected):
        raise ModelMismatchError(f"blob has shape {tuple(blob.shape)} ({blob.size} elements), expected "
                                 f"{expected} ({math.prod(expected)} elements)", layer=layer, blob=index)
    return blob.reshape(expected).astype(np.float32, copy=False)


def _four_d(blob: np.ndarray, what: str, layer: str, index: int) -> np.ndarray:
    blob = np.asarray(blob)
    if blob.ndim != 4:
        raise ModelMismatchError(f"{what} weights must be 4-D, got shape {tuple(blob.shape)}",
                                 layer=layer, blob=index)
    return blob.astype(np.float32, copy=False)


def conv_kernel(blob: np.ndarray, *, layer: str = "?", index: int = 0) -> np.ndarray:
    """Convolution weights [O, I/g, kh, kw] -> HWIO (kh, kw, I/g, O)."""
    return np.ascontiguousarray(_four_d(blob, "convolution", layer, index).transpose(2, 3, 1, 0))


def deconv_kernel(blob: np.ndarray, group: int = 1, *, layer: str = "?", index: int = 0) -> np.ndarray:
    """Deconvolution weights [I, O/g, kh, kw] -> the flipped forward-conv HWIO kernel (kh, kw, I/g, O).

    Caffe's deconvolution scatters input channel c of group g through ``w[c, j]`` into output channel
    ``g * O/g + j``; as a convolution of the stride-dilated input, that output reads input channel
    ``c - g * I/g`` of its group through the spatially flipped ``w[c, j]``.
    """
    w = _four_d(blob, "deconvolution", layer, index)
    c_in, c_out_g, kh, kw = w.shape
    if group < 1 or c_in % group:
        raise ModelMismatchError(f"deconvolution weights {tuple(w.shape)} have {c_in} input channels, "
                                 f"not divisible by group={group}", layer=layer, blob=index)
    w = w.reshape(group, c_in // group, c_out_g, kh, kw)
    k = w.transpose(3, 4, 1, 0, 2).reshape(kh, kw, c_in // group, group * c_out_g)
    return np.ascontiguousarray(k[::-1, ::-1])


def inner_product_kernel(blob: np.ndarray, input_chw: Sequence[int] | None = None, *,
                         layer: str = "?", index: int = 0) -> np.ndarray:
    """InnerProduct weights [out, in] -> (in, out); rows reordered C,H,W -> H,W,C when the input is a map.

    Caffe flattens a C x H x W input in C, H, W order, jaxviz flattens NHWC in H, W, C order.
    Legacy (1, 1, out, in) blobs are accepted.
    """
    w = np.asarray(blob)
    shape = _strip_leading_ones(w.shape)
    if len(shape) == 1 and w.ndim >= 2:  # a (.., 1, in) blob: one output unit
        shape = (1, shape[0])
    if len(shape) != 2:
        raise ModelMismatchError(f"inner product weights must be 2-D (out, in), got shape {tuple(w.shape)}",
                                 layer=layer, blob=index)
    n_out, n_in = shape
    w = w.reshape(n_out, n_in).astype(np.float32, copy=False)
    if input_chw is None:
        return np.ascontiguousarray(w.T)
    c, h, wd = (int(s) for s in input_chw)
    if c * h * wd != n_in:
        raise ModelMismatchError(f"inner product weights take {n_in} inputs, but the bottom is "
                                 f"{c}x{h}x{wd} = {c * h * wd}", layer=layer, blob=index)
    return np.ascontiguousarray(w.reshape(n_out, c, h, wd).transpose(2, 3, 1, 0).reshape(n_in, n_out))


def bias_vector(blob: np.ndarray, n: int, *, layer: str = "?", index: int = 1) -> np.ndarray:
    """A bias blob (n,) or legacy (1, 1, 1, n) -> (n,) float32."""
    return checked_blob(blob, (n,), layer=layer, index=index)


def _optional_bias(blob: np.ndarray | None, n: int, layer: str) -> dict[str, np.ndarray]:
    return {} if blob is None else {"bias": bias_vector(blob, n, layer=layer, index=1)}


def convolution_layer(weight: np.ndarray, bias: np.ndarray | None, kernel_shape: Sequence[int], *,
                      layer: str = "?") -> dict[str, np.ndarray]:
    """A Convolution layer's blobs -> ``{"kernel", "bias"}`` (no ``bias`` when ``bias`` is None).

    ``kernel_shape`` is the HWIO kernel (kh, kw, I/g, O) the architecture expects; ``weight`` must be
    its Caffe form [O, I/g, kh, kw].
    """
    kh, kw, cin_g, c_out = (int(s) for s in kernel_shape)
    w = checked_blob(weight, (c_out, cin_g, kh, kw), layer=layer, index=0)
    return {"kernel": conv_kernel(w, layer=layer), **_optional_bias(bias, c_out, layer)}


def deconvolution_layer(weight: np.ndarray, bias: np.ndarray | None, kernel_shape: Sequence[int],
                        group: int = 1, *, layer: str = "?") -> dict[str, np.ndarray]:
    """A Deconvolution layer's blobs -> ``{"kernel", "bias"}`` (no ``bias`` when ``bias`` is None).

    ``kernel_shape`` is the flipped forward HWIO kernel (kh, kw, I/g, O) the architecture expects;
    ``weight`` must be Caffe's [I, O/g, kh, kw].
    """
    kh, kw, cin_g, c_out = (int(s) for s in kernel_shape)
    w = checked_blob(weight, (cin_g * group, c_out // group, kh, kw), layer=layer, index=0)
    return {"kernel": deconv_kernel(w, group, layer=layer), **_optional_bias(bias, c_out, layer)}


def inner_product_layer(weight: np.ndarray, bias: np.ndarray | None, n_in: int, n_out: int,
                        input_chw: Sequence[int] | None = None, *, transpose: bool = False,
                        layer: str = "?") -> dict[str, np.ndarray]:
    """An InnerProduct layer's blobs -> ``{"kernel": (in, out), "bias"}`` (no ``bias`` when it is None).

    ``weight`` is [out, in], or [in, out] with Caffe's ``transpose``; ``input_chw`` reorders the rows
    C,H,W -> H,W,C for a map input (see ``inner_product_kernel``).
    """
    if transpose:
        w = checked_blob(weight, (n_in, n_out), layer=layer, index=0).T
    else:
        w = checked_blob(weight, (n_out, n_in), layer=layer, index=0)
    return {"kernel": inner_product_kernel(w, input_chw, layer=layer), **_optional_bias(bias, n_out, layer)}


def chw_columns_to_hwc(kernel: np.ndarray, chw: Sequence[int]) -> np.ndarray:
    """Reorder an (in, C*H*W) dense kernel's columns from C,H,W to H,W,C order."""
    c, h, w = (int(s) for s in chw)
    n_in = kernel.shape[0]
    return np.ascontiguousarray(kernel.reshape(n_in, c, h, w).transpose(0, 2, 3, 1).reshape(n_in, c * h * w))


def chw_vector_to_hwc(vector: np.ndarray, chw: Sequence[int]) -> np.ndarray:
    """Reorder a C*H*W vector (e.g. a bias) from C,H,W to H,W,C order."""
    c, h, w = (int(s) for s in chw)
    return np.ascontiguousarray(vector.reshape(c, h, w).transpose(1, 2, 0).reshape(-1))


def generator_defc5_params(kernel: np.ndarray, bias: np.ndarray, reshape_chw: Sequence[int]) -> dict[str, np.ndarray]:
    """defc5's converted (in, out) kernel and bias with outputs permuted so that an NHWC reshape to
    (H, W, C) yields exactly Caffe's C,H,W reshape."""
    return {"kernel": chw_columns_to_hwc(kernel, reshape_chw), "bias": chw_vector_to_hwc(bias, reshape_chw)}


def _layer_blobs(weights: Blobs, expected: Sequence[str]) -> None:
    """Check that every expected layer has blobs and no other layer does (one error listing them all)."""
    missing = [name for name in expected if len(weights.get(name, ())) == 0]
    if missing:
        raise ModelMismatchError(f"weights are missing for layer(s) {', '.join(missing)}; "
                                 f"layers with weights: {', '.join(n for n in weights if len(weights[n])) or 'none'}",
                                 layer=missing[0], blob=0)
    extra = [name for name, blobs in weights.items() if len(blobs) and name not in expected]
    if extra:
        raise ModelMismatchError(f"weights for layer(s) {', '.join(extra)} have no place in this "
                                 f"architecture (expected only {', '.join(expected)})", layer=extra[0])


def _weight_and_bias(weights: Blobs, name: str) -> tuple[np.ndarray, np.ndarray]:
    blobs = tuple(weights[name])
    if len(blobs) != 2:
        raise ModelMismatchError(f"expected 2 blobs (weights, bias), found {len(blobs)}",
                                 layer=name, blob=len(blobs) if len(blobs) < 2 else 2)
    return blobs[0], blobs[1]


def _conv_layer(weights: Blobs, name: str, c_in: int, features: int, kernel: int, group: int) -> dict:
    w, b = _weight_and_bias(weights, name)
    return convolution_layer(w, b, (kernel, kernel, c_in // group, features), layer=name)


def _deconv_layer(weights: Blobs, name: str, c_in: int, features: int, kernel: int, group: int = 1) -> dict:
    w, b = _weight_and_bias(weights, name)
    return deconvolution_layer(w, b, (kernel, kernel, c_in // group, features), group, layer=name)


def _dense_layer(weights: Blobs, name: str, n_in: int, n_out: int,
                 input_chw: Sequence[int] | None = None) -> dict:
    w, b = _weight_and_bias(weights, name)
    return inner_product_layer(w, b, n_in, n_out, input_chw, layer=name)


def caffenet_params(weights: Blobs, config: CaffeNetConfig | None = None) -> Params:
    """CaffeNet's Flax params ``{"conv1": {"kernel", "bias"}, ..., "fc8": ...}`` from Caffe blobs by layer.

    Use as ``CaffeNet(config).apply({"params": params}, x)``.
    """
    config = CaffeNetConfig() if config is None else config
    conv_names = [f"conv{i}" for i in range(1, 6)]
    _layer_blobs(weights, conv_names + ["fc6", "fc7", "fc8"])
    params: Params = {}
    c_in = config.in_channels
    for name, spec in zip(conv_names, config.convs):
        params[name] = _conv_layer(weights, name, c_in, spec.features, spec.kernel, spec.group)
        c_in = spec.features
    h, w, c = caffenet_tap_shapes(config)["pool5"]
    params["fc6"] = _dense_layer(weights, "fc6", c * h * w, config.fc[0], input_chw=(c, h, w))
    params["fc7"] = _dense_layer(weights, "fc7", config.fc[0], config.fc[1])
    params["fc8"] = _dense_layer(weights, "fc8", config.fc[1], config.fc[2])
    return params


def generator_params(weights: Blobs, config: GeneratorConfig | None = None) -> Params:
    """A DeePSiM generator's Flax params ``{"defc7": ..., "deconv0": ...}`` from Caffe blobs by layer.

    defc5's outputs are permuted so that the module's NHWC reshape equals Caffe's C,H,W reshape.
    """
    config = GeneratorConfig() if config is None else config
    fc_names = list(FC_LAYERS) if config.fc else []
    conv_names = list(CONV_LAYERS[:len(config.convs)])
    _layer_blobs(weights, fc_names + conv_names + list(DECONV_LAYERS))
    params: Params = {}
    n_in = config.code_size
    for name, width in zip(fc_names, config.fc):
        params[name] = _dense_layer(weights, name, n_in, width)
        n_in = width
    if config.fc:
        params["defc5"] = generator_defc5_params(params["defc5"]["kernel"], params["defc5"]["bias"], config.reshape)
    c_in = config.reshape[0]
    for name, spec in zip(conv_names, config.convs):
        params[name] = _conv_layer(weights, name, c_in, spec.features, spec.kernel, 1)
        c_in = spec.features
    for name, spec in zip(DECONV_LAYERS, config.deconvs):
        params[name] = _deconv_layer(weights, name, c_in, spec.features, spec.kernel)
        c_in = spec.features
    return params
