"""NetParameter ``Message`` -> ``NetSpec``: the part shared by the binary and the text parser.

Handles the three layer generations Caffe has used: V2 ``layer`` (type strings), V1 ``layers`` (type enums,
2014 model-zoo files) and V0 (a ``layers`` entry wrapping a ``layer { type: "conv" kernelsize: ... }``, as in
the Places205 deploy file), upgrading V0 parameters to their V2 messages. Values parsed from text are
normalized to the types caffe.proto declares (``alpha: 1`` -> 1.0, ``bias_term: 0`` -> False) so both
parsers give equal Messages for equal networks.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from weights_convert.caffe_schema import PARAM_SCHEMAS, SCHEMAS
from weights_convert.errors import ConversionError, CorruptModelError
from weights_convert.netspec import LayerSpec, Message, NetSpec, first, repeated, v1_type_name

# V0 type string -> V2 type string (caffe/util/upgrade_proto.cpp UpgradeV0LayerType).
V0_LAYER_TYPES: dict[str, str] = {
    "accuracy": "Accuracy", "bnll": "BNLL", "concat": "Concat", "conv": "Convolution", "data": "Data",
    "dropout": "Dropout", "euclidean_loss": "EuclideanLoss", "flatten": "Flatten", "hdf5_data": "HDF5Data",
    "hdf5_output": "HDF5Output", "im2col": "Im2col", "images": "ImageData", "infogain_loss": "InfogainLoss",
    "innerproduct": "InnerProduct", "lrn": "LRN", "multinomial_logistic_loss": "MultinomialLogisticLoss",
    "pool": "Pooling", "relu": "ReLU", "sigmoid": "Sigmoid", "softmax": "Softmax",
    "softmax_loss": "SoftmaxWithLoss", "split": "Split", "tanh": "TanH", "window_data": "WindowData",
}
# V0 flat field -> (V2 parameter message, V2 field), per V2 type.
_V0_FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "Convolution": {"num_output": ("convolution_param", "num_output"),
                    "biasterm": ("convolution_param", "bias_term"), "pad": ("convolution_param", "pad"),
                    "kernelsize": ("convolution_param", "kernel_size"), "group": ("convolution_param", "group"),
                    "stride": ("convolution_param", "stride"),
                    "weight_filler": ("convolution_param", "weight_filler"),
                    "bias_filler": ("convolution_param", "bias_filler")},
    "InnerProduct": {"num_output": ("inner_product_param", "num_output"),
                     "biasterm": ("inner_product_param", "bias_term"),
                     "weight_filler": ("inner_product_param", "weight_filler"),
                     "bias_filler": ("inner_product_param", "bias_filler")},
    "Pooling": {"pool": ("pooling_param", "pool"), "kernelsize": ("pooling_param", "kernel_size"),
                "stride": ("pooling_param", "stride"), "pad": ("pooling_param", "pad")},
    "LRN": {"local_size": ("lrn_param", "local_size"), "alpha": ("lrn_param", "alpha"),
            "beta": ("lrn_param", "beta"), "k": ("lrn_param", "k")},
    "Dropout": {"dropout_ratio": ("dropout_param", "dropout_ratio")},
    "Concat": {"concat_dim": ("concat_param", "concat_dim")},
}


# ----- typing text values as caffe.proto declares them ----------------------------------------------

def _coerce_value(value: Any, kind: str, sub: Any, field: str) -> Any:
    """One text-format value converted to the Python type of its declared protobuf kind."""
    bad = ConversionError(f"field {field!r} expects {kind}, got {value!r}")
    if kind in ("f32", "f64"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if kind in ("i64", "u64"):
        if isinstance(value, bool) or not isinstance(value, int) or (kind == "u64" and value < 0):
            raise bad
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value in ("t", "f"):
            return value == "t"
        raise bad
    if kind == "enum":
        if isinstance(value, int) and not isinstance(value, bool):
            return sub.get(value, value)
        if isinstance(value, str):
            return value
        raise bad
    if kind == "str":
        if not isinstance(value, str):
            raise bad
        return value
    if kind == "msg":
        if not isinstance(value, dict):
            raise bad
        return coerce_message(value, sub)
    return value


def coerce_message(msg: Message, schema_name: str) -> Message:
    """``msg`` with every field known to ``schema_name`` typed as declared; unknown fields kept as parsed."""
    by_name = {name: (kind, sub) for name, kind, sub in SCHEMAS[schema_name].values()}
    out: Message = {}
    for name, values in msg.items():
        if name in by_name:
            kind, sub = by_name[name]
            out[name] = [_coerce_value(v, kind, sub, name) for v in values]
        else:
            out[name] = list(values)
    return out


# ----- blobs ------------------------------------------------------------------------------------------

def blob_shape(legacy: Sequence[int | None], dims: Sequence[int] | None) -> tuple[int, ...]:
    """Caffe's rule: the legacy (num, channels, height, width) if any is present, else ``shape.dim``."""
    if any(v is not None for v in legacy):
        return tuple(0 if v is None else int(v) for v in legacy)
    return tuple(int(d) for d in dims or ())


def assemble_blob(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``data`` reshaped to ``shape``; CorruptModelError when the element count disagrees."""
    if any(d < 0 for d in shape):
        raise CorruptModelError(f"blob shape {shape} has a negative dimension")
    expected = math.prod(shape)
    if data.size != expected:
        raise CorruptModelError(f"blob has {data.size} values but its shape {shape} needs {expected}")
    return data.reshape(shape)


def blob_from_message(msg: Message) -> np.ndarray:
    """A text-format ``blobs { shape { dim } data: ... }`` entry as an array (float32, or float64 from double_data)."""
    legacy = [first(msg, k) for k in ("num", "channels", "height", "width")]
    dims = repeated(first(msg, "shape"), "dim")
    data = repeated(msg, "data")
    values = (np.asarray(data, dtype=np.float32) if data or not repeated(msg, "double_data")
              else np.asarray(repeated(msg, "double_data"), dtype=np.float64))
    return assemble_blob(values, blob_shape(legacy, dims))


# ----- layers -----------------------------------------------------------------------------------------

def _merged(values: list[Any]) -> Message:
    """Protobuf merge of repeated occurrences of one optional message field (lists concatenate)."""
    out: Message = {}
    for value in values:
        if isinstance(value, dict):
            for key, vals in value.items():
                out.setdefault(key, []).extend(vals)
    return out


def _phase(msg: Message) -> str | None:
    """The one phase an include/exclude rule restricts the layer to, or None when it runs in both."""
    include = {first(r, "phase") for r in repeated(msg, "include") if isinstance(r, dict)} - {None}
    if len(include) == 1 and all(first(r, "phase") is not None for r in repeated(msg, "include")):
        return include.pop()
    exclude = {first(r, "phase") for r in repeated(msg, "exclude") if isinstance(r, dict)} - {None}
    if len(exclude) == 1:
        return {"TRAIN": "TEST", "TEST": "TRAIN"}.get(exclude.pop())
    return None


def _params(msg: Message, text: bool) -> dict[str, Message]:
    """The layer's ``*_param`` messages, typed per caffe.proto when they came from text."""
    params = {}
    for key, values in msg.items():
        if key.endswith("_param") and values and isinstance(values[-1], dict):
            merged = _merged(values)
            params[key] = coerce_message(merged, PARAM_SCHEMAS[key]) if text and key in PARAM_SCHEMAS else merged
    return params


def _blobs(msg: Message) -> tuple[np.ndarray, ...]:
    """The layer's blobs; text-format blob messages become arrays, each error naming its index."""
    blobs = []
    for index, blob in enumerate(repeated(msg, "blobs")):
        try:
            blobs.append(blob if isinstance(blob, np.ndarray) else blob_from_message(blob))
        except ConversionError as err:
            raise err.located(blob=index) from None
    return tuple(blobs)


def _strings(msg: Message, field: str) -> tuple[str, ...]:
    """A repeated string field, rejecting non-strings (text such as ``top: 3``)."""
    values = repeated(msg, field)
    if not all(isinstance(v, str) for v in values):
        raise ConversionError(f"field {field!r} expects strings, got {values!r}")
    return tuple(values)


def _v2_layer(msg: Message, text: bool) -> LayerSpec:
    """A V2 LayerParameter."""
    return LayerSpec(name=str(first(msg, "name", "")), type=str(first(msg, "type", "")),
                     bottoms=_strings(msg, "bottom"), tops=_strings(msg, "top"), params=_params(msg, text),
                     blobs=_blobs(msg), phase=_phase(msg))


def _v0_upgrade(outer: Message, v0: Message, text: bool) -> LayerSpec:
    """A V1 entry wrapping a V0 layer, with V0's flat fields moved into V2 parameter messages."""
    v0_type = str(first(v0, "type", ""))
    layer_type = V0_LAYER_TYPES.get(v0_type, v0_type)
    params: dict[str, Message] = {}
    for field, (param, v2_field) in _V0_FIELDS.get(layer_type, {}).items():
        if field in v0:
            params.setdefault(param, {})[v2_field] = list(v0[field])
    if text:
        params = {k: coerce_message(m, PARAM_SCHEMAS[k]) for k, m in params.items()}
    params.update(_params(outer, text))
    return LayerSpec(name=str(first(outer, "name", first(v0, "name", ""))), type=layer_type,
                     bottoms=_strings(outer, "bottom"), tops=_strings(outer, "top"), params=params,
                     blobs=_blobs(outer) or _blobs(v0), phase=_phase(outer))


def _v1_layer(msg: Message, text: bool) -> LayerSpec:
    """A V1LayerParameter (enum type), or a V0 layer wrapped in one."""
    if msg.get("layer"):
        return _v0_upgrade(msg, _merged(msg["layer"]), text)
    code = first(msg, "type", 0)
    return LayerSpec(name=str(first(msg, "name", "")), type=v1_type_name(code),
                     bottoms=_strings(msg, "bottom"), tops=_strings(msg, "top"), params=_params(msg, text),
                     blobs=_blobs(msg), phase=_phase(msg))


def _layer_label(msg: Message, index: int) -> str:
    """The layer's name for error messages, or its position when it has none yet."""
    name = first(msg, "name") or first(_merged(repeated(msg, "layer")), "name")
    return str(name) if name else f"#{index}"


def _retyped(err: ConversionError, error: type[ConversionError]) -> ConversionError:
    """A plain ConversionError (a badly typed value) as the parser's own error class."""
    if type(err) is ConversionError:
        return error(err.problem, file=err.file, layer=err.layer, blob=err.blob, offset=err.offset)
    return err


# ----- inputs and the whole net -----------------------------------------------------------------------

def _top_level_inputs(net: Message, error: type[ConversionError]) -> dict[str, tuple[int, ...] | None]:
    """Inputs declared by ``input`` with four ``input_dim`` each, or one ``input_shape`` each."""
    names = [str(n) for n in repeated(net, "input")]
    dims = [int(d) for d in repeated(net, "input_dim")]
    shapes = repeated(net, "input_shape")
    if dims:
        if len(dims) != 4 * len(names):
            raise error(f"{len(names)} inputs need {4 * len(names)} input_dim values, found {len(dims)}")
        return {n: tuple(dims[4 * i:4 * i + 4]) for i, n in enumerate(names)}
    if shapes:
        if len(shapes) != len(names):
            raise error(f"{len(names)} inputs but {len(shapes)} input_shape entries")
        return {n: tuple(int(d) for d in repeated(s, "dim")) for n, s in zip(names, shapes)}
    return {n: None for n in names}


def _input_layer_inputs(layer: LayerSpec) -> dict[str, tuple[int, ...] | None]:
    """The blobs an Input layer declares, with its one shape per top (or one shape shared by all tops)."""
    shapes = [tuple(int(d) for d in repeated(s, "dim")) for s in repeated(layer.param("input_param"), "shape")]
    if len(shapes) == 1:
        return {top: shapes[0] for top in layer.tops}
    if len(shapes) == len(layer.tops):
        return dict(zip(layer.tops, shapes))
    return {top: None for top in layer.tops}


def netspec_from_message(net: Message, source: str | None, *, text: bool,
                         error: type[ConversionError] = CorruptModelError) -> NetSpec:
    """A NetSpec from a decoded NetParameter (``text``: its values came from the text parser).

    Input layers stay in ``layers`` and their tops are also listed in ``inputs``, so that ``inputs``
    always holds every network input whichever way the file declared it.
    """
    try:
        if net.get("layer") and net.get("layers"):
            raise error("the net mixes V2 'layer' and V1 'layers' entries")
        inputs = _top_level_inputs(net, error)
    except ConversionError as err:
        raise _retyped(err, error).located(file=source) from None
    layers = []
    entries = [(False, m) for m in repeated(net, "layer")] + [(True, m) for m in repeated(net, "layers")]
    for index, (v1, msg) in enumerate(entries):
        try:
            if not isinstance(msg, dict):
                raise error(f"layer entry is {msg!r}, not a message")
            layer = _v1_layer(msg, text) if v1 else _v2_layer(msg, text)
        except ConversionError as err:
            label = _layer_label(msg, index) if isinstance(msg, dict) else f"#{index}"
            raise _retyped(err, error).located(file=source, layer=label) from None
        if layer.type == "Input":
            inputs.update(_input_layer_inputs(layer))
        layers.append(layer)
    if not layers:
        raise error("the net defines no layers", file=source)
    name = first(net, "name", "")
    return NetSpec(name=name if isinstance(name, str) else str(name), inputs=inputs, layers=tuple(layers),
                   source=source)
