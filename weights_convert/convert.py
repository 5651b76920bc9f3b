"""From a ``.caffemodel`` (and optionally its deploy prototxt) to a jaxviz model folder.

The architecture of CaffeNet and of the fc6 generator is known, so the prototxt is optional: without
one, the released sizes are assumed; with one, the sizes are read from it (a scaled-down CaffeNet
converts too) and any disagreement with the weights is reported layer by layer.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from typing import Any, Callable

from jaxviz.models import checkpoint
from jaxviz.models.caffenet import CaffeNetConfig, ConvSpec
from jaxviz.models.generator import DECONV_LAYERS, FC_LAYERS, DeconvSpec, GeneratorConfig
from weights_convert.layouts import caffenet_params, generator_params
from weights_convert.caffemodel import read_caffemodel
from weights_convert.errors import ConversionError, ModelMismatchError
from weights_convert.netspec import (LayerSpec, NetSpec, attach_weights, conv_params, first,
                                     lrn_params, pool_params, repeated)
from weights_convert.prototxt import read_prototxt

CONVERTER_VERSION = 1


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks (real caffemodels are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _require(spec: NetSpec, name: str, layer_type: str) -> LayerSpec:
    layer = spec.layer(name)
    if layer.type != layer_type:
        raise ModelMismatchError(f"expected a {layer_type} layer, found {layer.type}", file=spec.source,
                                 layer=name)
    return layer


def _input_size(spec: NetSpec, default: int) -> tuple[int, int]:
    """(channels, size) of the network's single image input, from input_dim/input_shape/Input layers."""
    shapes = [s for s in spec.inputs.values() if s]
    if not shapes:
        return 3, default
    shape = shapes[0]
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ModelMismatchError(f"expected one square N,C,H,W image input, got {shape}", file=spec.source)
    return int(shape[1]), int(shape[2])


def caffenet_config_from_spec(spec: NetSpec) -> CaffeNetConfig:
    """The ``CaffeNetConfig`` a CaffeNet-topology prototxt describes (sizes, groups, pooling, LRN)."""
    convs = []
    for i in range(1, 6):
        p = conv_params(_require(spec, f"conv{i}", "Convolution"))
        if p.kernel[0] != p.kernel[1] or p.stride[0] != p.stride[1] or p.pad[0] != p.pad[1]:
            raise ModelMismatchError("only square kernels, strides and pads are supported by CaffeNet",
                                     file=spec.source, layer=f"conv{i}")
        convs.append(ConvSpec(p.num_output, p.kernel[0], p.stride[0], p.pad[0], p.group))
    pool = pool_params(_require(spec, "pool1", "Pooling"))
    lrn = lrn_params(_require(spec, "norm1", "LRN"))
    fc = [int(first(_require(spec, f"fc{i}", "InnerProduct").param("inner_product_param"), "num_output"))
          for i in (6, 7, 8)]
    channels, size = _input_size(spec, 227)
    try:
        return CaffeNetConfig(input_size=size, in_channels=channels, convs=tuple(convs),
                              pool_kernel=pool.kernel[0], pool_stride=pool.stride[0],
                              lrn_local_size=lrn.local_size, lrn_alpha=lrn.alpha, lrn_beta=lrn.beta,
                              lrn_k=lrn.k, fc=tuple(fc))
    except ValueError as err:
        raise ModelMismatchError(f"not a valid CaffeNet: {err}", file=spec.source) from None


def generator_config_from_spec(spec: NetSpec) -> GeneratorConfig:
    """The ``GeneratorConfig`` an fc6-generator-topology prototxt describes."""
    fc = [int(first(_require(spec, n, "InnerProduct").param("inner_product_param"), "num_output"))
          for n in FC_LAYERS]
    reshape = _require(spec, "reshape", "Reshape")
    dims = [int(d) for d in repeated(first(reshape.param("reshape_param"), "shape"), "dim")]
    if len(dims) != 4:
        raise ModelMismatchError(f"expected a reshape to N,C,H,W, got dims {dims}", file=spec.source,
                                 layer="reshape")
    deconvs = []
    for name in DECONV_LAYERS:
        p = conv_params(_require(spec, name, "Deconvolution"))
        deconvs.append(DeconvSpec(p.num_output, p.kernel[0], p.stride[0], p.pad[0]))
    slopes = {float(first(l.param("relu_param"), "negative_slope", 0.0)) for l in spec.layers if l.type == "ReLU"}
    if len(slopes) > 1:
        raise ModelMismatchError(f"the generator's ReLUs have different slopes {sorted(slopes)}",
                                 file=spec.source)
    shapes = [s for s in spec.inputs.values() if s]
    code_size = int(shapes[0][-1]) if shapes else fc[0]
    h = dims[2]  # the output size follows from the layers
    for d in deconvs:
        h = d.stride * (h - 1) + d.kernel - 2 * d.pad
    default = GeneratorConfig()
    crop = default.crop_size if h == default.output_size else h
    try:
        return GeneratorConfig(code_size=code_size, fc=tuple(fc), reshape=tuple(dims[1:]),
                               deconvs=tuple(deconvs), negative_slope=slopes.pop() if slopes else 0.3,
                               output_size=h, crop_size=crop)
    except ValueError as err:
        raise ModelMismatchError(f"not a valid fc6 generator: {err}", file=spec.source) from None


# architecture -> (config from a prototxt NetSpec, default config factory, params from blobs)
_ARCHITECTURES: dict[str, tuple[Callable, Callable, Callable]] = {
    "caffenet": (caffenet_config_from_spec, CaffeNetConfig, caffenet_params),
    "generator": (generator_config_from_spec, GeneratorConfig, generator_params),
}

ARCHITECTURES = tuple(_ARCHITECTURES)


def convert(architecture: str, caffemodel: str | os.PathLike, out_dir: str | os.PathLike,
            prototxt: str | os.PathLike | None = None) -> pathlib.Path:
    """Convert ``caffemodel`` of a known ``architecture`` into a jaxviz model folder ``out_dir``."""
    if architecture not in _ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(_ARCHITECTURES)}")
    config_from_spec, default_config, params_from_blobs = _ARCHITECTURES[architecture]
    caffemodel = pathlib.Path(caffemodel)
    weights = read_caffemodel(caffemodel)
    if prototxt is not None:
        arch = read_prototxt(prototxt)
        config = config_from_spec(arch)
        weights = attach_weights(arch, weights)
    else:
        config = default_config()
    try:
        params = params_from_blobs(weights.blobs_by_layer(), config)
    except ConversionError as err:
        raise err.located(file=str(caffemodel)) from None
    metadata: dict[str, Any] = {
        "architecture": architecture,
        "config": config.to_dict(),
        "source": {"file": caffemodel.name, "sha256": file_sha256(caffemodel),
                   "bytes": caffemodel.stat().st_size},
        "converter_version": CONVERTER_VERSION,
        # Caffe's ImageNet models take BGR pixels on a 0-255 scale minus the ILSVRC mean image.
        "preprocessing": {"channel_order": "BGR", "pixel_scale": 255, "mean": "image"},
    }
    if prototxt is not None:
        metadata["prototxt"] = {"file": pathlib.Path(prototxt).name, "sha256": file_sha256(prototxt)}
    return checkpoint.save(out_dir, params, metadata)
