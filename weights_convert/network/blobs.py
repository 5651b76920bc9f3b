"""``params_from_blobs(spec)``: a prototxt-built network's parameters from the Caffe blobs in its NetSpec.

Each parametrized step's blobs go through the per-layer functions of ``weights_convert.layouts`` (the
same conversions the known architectures use), checked against the parameter shapes the builders
inferred: convolution [O, I/g, kh, kw] -> HWIO, deconvolution -> the flipped forward HWIO kernel, inner
product -> (in, out) with rows reordered C,H,W -> H,W,C when its bottom is a map, PReLU slopes as is.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from weights_convert.layouts import checked_blob, convolution_layer, deconvolution_layer, inner_product_layer
from weights_convert.errors import ConversionError, ModelMismatchError
from weights_convert.netspec import LayerSpec, NetSpec, conv_params, first
from weights_convert.network.axes import caffe_shape
from weights_convert.network.build import build_network, is_training_only
from weights_convert.network.graph import Params, PrototxtNet, Step


def _blobs_of(layer: LayerSpec, step: Step) -> tuple[np.ndarray, ...]:
    """The layer's blobs, as many as its parameters (a PReLU has one)."""
    want = len(step.param_shapes) if step.type != "PReLU" else 1
    if len(layer.blobs) != want:
        raise ModelMismatchError(f"{layer.type} layer expects {want} blob(s) "
                                 f"({', '.join(step.param_shapes)}), found {len(layer.blobs)}",
                                 blob=min(len(layer.blobs), want))
    return layer.blobs


def _weight_and_bias(layer: LayerSpec, step: Step) -> tuple[np.ndarray, np.ndarray | None]:
    """The weight blob and the bias blob (None for a layer with ``bias_term: false``)."""
    blobs = _blobs_of(layer, step)
    return blobs[0], (blobs[1] if "bias" in step.param_shapes else None)


def _convert_convolution(layer: LayerSpec, step: Step) -> dict[str, np.ndarray]:
    """[O, I/g, kh, kw] -> HWIO."""
    weight, bias = _weight_and_bias(layer, step)
    return convolution_layer(weight, bias, step.param_shapes["kernel"], layer=layer.name)


def _convert_deconvolution(layer: LayerSpec, step: Step) -> dict[str, np.ndarray]:
    """[I, O/g, kh, kw] -> flipped forward HWIO."""
    weight, bias = _weight_and_bias(layer, step)
    return deconvolution_layer(weight, bias, step.param_shapes["kernel"], conv_params(layer).group,
                               layer=layer.name)


def _convert_inner_product(layer: LayerSpec, step: Step) -> dict[str, np.ndarray]:
    """[out, in] (or [in, out] with ``transpose``) -> (in, out), rows in H, W, C order for a map bottom."""
    weight, bias = _weight_and_bias(layer, step)
    n_in, n_out = step.param_shapes["kernel"]
    bottom = step.bottom_shapes[0]
    chw = caffe_shape(bottom)[1:] if len(bottom) == 4 else None
    transpose = bool(first(layer.param("inner_product_param"), "transpose", False))
    return inner_product_layer(weight, bias, n_in, n_out, chw, transpose=transpose, layer=layer.name)


def _convert_prelu(layer: LayerSpec, step: Step) -> dict[str, np.ndarray]:
    """One slope per channel (or one shared)."""
    blobs = _blobs_of(layer, step)
    return {"slope": checked_blob(blobs[0], step.param_shapes["slope"], layer=layer.name, index=0)}


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
