"""A format-neutral description of a Caffe network: what both the binary and the text parser produce.

A protobuf message is represented as ``Message = dict[str, list]``: every field, optional or repeated,
maps to the list of values it had in the file (text and binary formats alike allow a field to repeat,
and for an optional field the last value wins). Nested messages are again ``Message`` dicts; enums are
their symbolic names (``"MAX"``, ``"ACROSS_CHANNELS"``) whichever format they came from.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from weights_convert.errors import ModelMismatchError, UnsupportedLayerError, shorten

Message = dict[str, list[Any]]

# V1LayerParameter.type enum -> V2 type string.
V1_LAYER_TYPES: dict[int, str] = {
    0: "None", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout",
    7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 11: "Im2col", 12: "ImageData",
    13: "InfogainLoss", 14: "InnerProduct", 15: "LRN", 16: "MultinomialLogisticLoss", 17: "Pooling",
    18: "ReLU", 19: "Sigmoid", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 23: "TanH",
    24: "WindowData", 25: "Eltwise", 26: "Power", 27: "SigmoidCrossEntropyLoss", 28: "HingeLoss",
    29: "MemoryData", 30: "ArgMax", 31: "Threshold", 32: "DummyData", 33: "Slice", 34: "MVN",
    35: "AbsVal", 36: "Silence", 37: "ContrastiveLoss", 38: "Exp", 39: "Deconvolution",
}
V1_LAYER_TYPE_NAMES: dict[str, int] = {
    "NONE": 0, "ACCURACY": 1, "BNLL": 2, "CONCAT": 3, "CONVOLUTION": 4, "DATA": 5, "DROPOUT": 6,
    "EUCLIDEAN_LOSS": 7, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "IM2COL": 11,
    "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15,
    "MULTINOMIAL_LOGISTIC_LOSS": 16, "POOLING": 17, "RELU": 18, "SIGMOID": 19, "SOFTMAX": 20,
    "SOFTMAX_LOSS": 21, "SPLIT": 22, "TANH": 23, "WINDOW_DATA": 24, "ELTWISE": 25, "POWER": 26,
    "SIGMOID_CROSS_ENTROPY_LOSS": 27, "HINGE_LOSS": 28, "MEMORY_DATA": 29, "ARGMAX": 30,
    "THRESHOLD": 31, "DUMMY_DATA": 32, "SLICE": 33, "MVN": 34, "ABSVAL": 35, "SILENCE": 36,
    "CONTRASTIVE_LOSS": 37, "EXP": 38, "DECONVOLUTION": 39,
}


def v1_type_name(code_or_name: int | str) -> str:
    """The V2 type string for a V1 enum value given as its number or its symbolic name."""
    if isinstance(code_or_name, str):
        if code_or_name not in V1_LAYER_TYPE_NAMES:
            return code_or_name  # already a V2 string, or unknown: reported later by the builder
        code_or_name = V1_LAYER_TYPE_NAMES[code_or_name]
    return V1_LAYER_TYPES.get(code_or_name, f"V1Type{code_or_name}")


def first(msg: Message | None, field: str, default: Any = None) -> Any:
    """The value of an optional field (the last one written wins, as in protobuf), or ``default``."""
    if not msg or not msg.get(field):
        return default
    return msg[field][-1]


def repeated(msg: Message | None, field: str) -> list[Any]:
    """All values of a repeated field (empty list when absent)."""
    if not msg:
        return []
    return list(msg.get(field, []))


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One layer: its name, V2 type string, blob wiring, parameter messages and learned blobs.

    ``params`` maps the parameter message's field name (``"convolution_param"``, ``"pooling_param"``,
    ...) to its ``Message``. ``blobs`` keep the shape stored in the file (legacy 4-D or ``shape.dim``).
    """

    name: str
    type: str
    bottoms: tuple[str, ...] = ()
    tops: tuple[str, ...] = ()
    params: Mapping[str, Message] = dataclasses.field(default_factory=dict)
    blobs: tuple[np.ndarray, ...] = ()
    phase: str | None = None  # "TRAIN"/"TEST" when the layer has an include { phase } rule

    def param(self, name: str) -> Message:
        """The parameter message ``name`` (e.g. ``"convolution_param"``), empty if absent."""
        return self.params.get(name) or {}


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """A whole network: its input blobs (NCHW shapes when declared) and layers in file order."""

    name: str
    inputs: Mapping[str, tuple[int, ...] | None]
    layers: tuple[LayerSpec, ...]
    source: str | None = None  # file it was read from, for error messages

    def layer(self, name: str) -> LayerSpec:
        """The layer called ``name``; a ``ModelMismatchError`` naming the file if there is none."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ModelMismatchError(f"no layer named {name!r}; layers are {[l.name for l in self.layers]}",
                                 file=self.source)

    def blobs_by_layer(self) -> dict[str, tuple[np.ndarray, ...]]:
        """Learned blobs keyed by layer name (layers without blobs omitted)."""
        return {l.name: l.blobs for l in self.layers if l.blobs}


# ----- typed views of the parameter messages that the models need ---------------------------------

def _pair(msg: Message, single: str, h: str, w: str, default: int) -> tuple[int, int]:
    """Caffe's `kernel_size` / `kernel_h`+`kernel_w` convention: repeated single value or explicit h, w."""
    if first(msg, h) is not None or first(msg, w) is not None:
        return int(first(msg, h, default)), int(first(msg, w, default))
    values = repeated(msg, single)
    if not values:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise UnsupportedLayerError(f"{single} has {len(values)} values; only 2-D layers are supported")


@dataclasses.dataclass(frozen=True)
class ConvParams:
    """Convolution / Deconvolution settings, normalized to (h, w) pairs."""

    num_output: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    group: int = 1
    bias_term: bool = True


MAX_SIZE = 2 ** 31 - 1  # sizes beyond Caffe's int32 blobs are no network


def _in_range(name: str, value: int, low: int, high: int = MAX_SIZE) -> None:
    if not low <= value <= high:
        raise UnsupportedLayerError(f"{name} is {shorten(value, 40)}; it must be between {low} and {high}")


def conv_params(layer: LayerSpec) -> ConvParams:
    """The convolution settings of a Convolution or Deconvolution layer."""
    msg = layer.param("convolution_param")
    try:
        num_output = first(msg, "num_output")
        if num_output is None:
            raise UnsupportedLayerError("convolution_param.num_output is missing")
        kernel = _pair(msg, "kernel_size", "kernel_h", "kernel_w", 0)
        if 0 in kernel:
            raise UnsupportedLayerError("convolution_param has no kernel size")
        params = ConvParams(
            num_output=int(num_output), kernel=kernel,
            stride=_pair(msg, "stride", "stride_h", "stride_w", 1),
            pad=_pair(msg, "pad", "pad_h", "pad_w", 0),
            dilation=_pair(msg, "dilation", "dilation_h", "dilation_w", 1),
            group=int(first(msg, "group", 1)),
            bias_term=bool(first(msg, "bias_term", True)),
        )
        _in_range("convolution_param.num_output", params.num_output, 1)
        _in_range("convolution_param.group", params.group, 1)
        for name, pair, low in (("kernel_size", params.kernel, 1), ("stride", params.stride, 1),
                                ("dilation", params.dilation, 1), ("pad", params.pad, 0)):
            for v in pair:
                _in_range(f"convolution_param.{name}", v, low)
        return params
    except UnsupportedLayerError as err:
        raise err.located(layer=layer.name) from None


@dataclasses.dataclass(frozen=True)
class PoolParams:
    """Pooling settings (Caffe rounds the output size up)."""

    method: str  # "MAX" or "AVE"
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    global_pooling: bool = False


def pool_params(layer: LayerSpec) -> PoolParams:
    """The settings of a Pooling layer."""
    msg = layer.param("pooling_param")
    method = first(msg, "pool", "MAX")
    if method not in ("MAX", "AVE"):
        raise UnsupportedLayerError(f"pooling method {method} is not supported (MAX, AVE are)",
                                    layer=layer.name)
    glob = bool(first(msg, "global_pooling", False))
    kernel = _pair(msg, "kernel_size", "kernel_h", "kernel_w", 0)
    if not glob and 0 in kernel:
        raise UnsupportedLayerError("pooling_param has no kernel size", layer=layer.name)
    params = PoolParams(method=method, kernel=kernel, stride=_pair(msg, "stride", "stride_h", "stride_w", 1),
                        pad=_pair(msg, "pad", "pad_h", "pad_w", 0), global_pooling=glob)
    try:
        for name, pair, low in (("kernel_size", () if glob else params.kernel, 1), ("stride", params.stride, 1),
                                ("pad", params.pad, 0)):
            for v in pair:
                _in_range(f"pooling_param.{name}", v, low)
    except UnsupportedLayerError as err:
        raise err.located(layer=layer.name) from None
    return params


@dataclasses.dataclass(frozen=True)
class LRNParams:
    """Local response normalization settings."""

    local_size: int = 5
    alpha: float = 1.0
    beta: float = 0.75
    k: float = 1.0
    region: str = "ACROSS_CHANNELS"  # or "WITHIN_CHANNEL"


def lrn_params(layer: LayerSpec) -> LRNParams:
    """The settings of an LRN layer."""
    msg = layer.param("lrn_param")
    return LRNParams(local_size=int(first(msg, "local_size", 5)), alpha=float(first(msg, "alpha", 1.0)),
                     beta=float(first(msg, "beta", 0.75)), k=float(first(msg, "k", 1.0)),
                     region=first(msg, "norm_region", "ACROSS_CHANNELS"))


# ----- joining a prototxt architecture with caffemodel weights ----------------------------------------

# Layer types that cannot run without learned blobs.
LAYERS_WITH_BLOBS = frozenset({"Convolution", "Deconvolution", "InnerProduct", "PReLU", "BatchNorm", "Scale"})


def attach_weights(arch: NetSpec, weights: NetSpec) -> NetSpec:
    """``arch`` (TEST/unphased layers only) with each layer's blobs taken from ``weights`` by layer name."""
    files = f"{arch.source}, {weights.source}"
    kept = [l for l in arch.layers if l.phase != "TRAIN"]
    names = {l.name for l in kept}
    blobs = weights.blobs_by_layer()
    for name in blobs:
        if name not in names:
            raise ModelMismatchError(
                f"the weights {weights.source} have blobs for layer {name!r}, which the architecture "
                f"{arch.source} does not define (for the TEST phase)", file=files, layer=name)
    layers = []
    for layer in kept:
        found = blobs.get(layer.name, ())
        if not found and layer.type in LAYERS_WITH_BLOBS:
            raise ModelMismatchError(
                f"{layer.type} layer {layer.name!r} of {arch.source} has no blobs in the weights "
                f"{weights.source}", file=files, layer=layer.name)
        layers.append(dataclasses.replace(layer, blobs=tuple(found)))
    return dataclasses.replace(arch, layers=tuple(layers))
