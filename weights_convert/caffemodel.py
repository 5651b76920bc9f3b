"""Binary ``.caffemodel`` reader and writer (a serialized NetParameter), without Caffe or protobuf.

Reading: fields listed in ``caffe_schema`` are decoded into ``Message`` dicts with symbolic enums, every
other field is skipped by wire type. Blob data is read with numpy straight from the file's bytes (packed or
unpacked). ``data`` (float32) is used when present, else ``double_data``, which is kept as float64 so no
precision is lost; callers cast to their compute dtype. Blobs keep the shape the file gives (legacy
num/channels/height/width when any of those is set, else ``shape.dim``).

Writing: ``encode_caffemodel`` writes the fields of the schema in field-number order (parameter messages
the schema does not know, e.g. ``hdf5_data_param`` from a training prototxt, are left out).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import weights_convert.wire as wire
from weights_convert.caffe_schema import (
    BLOB_DATA, BLOB_DOUBLE_DATA, BLOB_SHAPE, PARAM_SCHEMAS, SCHEMAS, V1_PARAM_NUMBERS, V2_PARAM_NUMBERS,
    field_by_name)
from weights_convert.errors import ConversionError, CorruptModelError, UnsupportedLayerError
from weights_convert.netparam import assemble_blob, blob_shape, netspec_from_message
from weights_convert.netspec import V1_LAYER_TYPE_NAMES, V1_LAYER_TYPES, LayerSpec, Message, NetSpec

_LAYER_SCHEMAS = ("LayerParameter", "V1LayerParameter", "V0LayerParameter")
_VARINT_KINDS = ("i64", "u64", "bool", "enum")
_FLOAT_KEY = (BLOB_DATA << 3) | wire.FIXED32  # one byte: unpacked float data runs
_DOUBLE_KEY = (BLOB_DOUBLE_DATA << 3) | wire.FIXED64


# ----- reading ----------------------------------------------------------------------------------------

def _f32(bits: int) -> float:
    """A float32 field as the shortest decimal that round-trips, so 1e-4 reads back as 0.0001 like the text."""
    return float(str(np.float32(wire.fixed32_to_float(bits))))


def _varint_value(raw: int, kind: str, sub: Any) -> Any:
    """A varint field's raw bits as its declared kind."""
    if kind == "u64":
        return raw
    if kind == "bool":
        return raw != 0
    value = wire.to_signed64(raw)
    return sub.get(value, value) if kind == "enum" else value


def _scalar_values(buf: wire.Buffer, field: wire.Field, kind: str, sub: Any) -> list[Any] | None:
    """The values one occurrence of a scalar field holds (several when packed); None on a wire-type mismatch."""
    if field.wire_type == wire.LENGTH_DELIMITED:
        start, end = field.value
        if kind == "str":
            return [bytes(buf[start:end]).decode("utf-8", "surrogateescape")]
        if kind in _VARINT_KINDS:
            return [_varint_value(v, kind, sub) for v in wire.packed_varints(buf, start, end)]
        if kind == "f32":
            return [float(str(v)) for v in wire.packed_array(buf, start, end, "<f4")]
        if kind == "f64":
            return [float(v) for v in wire.packed_array(buf, start, end, "<f8")]
        return None
    if field.wire_type == wire.VARINT and kind in _VARINT_KINDS:
        return [_varint_value(field.value, kind, sub)]
    if field.wire_type == wire.FIXED32 and kind == "f32":
        return [_f32(field.value)]
    if field.wire_type == wire.FIXED64 and kind == "f64":
        return [wire.fixed64_to_double(field.value)]
    return None  # protobuf treats a known number with another wire type as an unknown field


def decode_blob(buf: wire.Buffer, start: int, end: int) -> np.ndarray:
    """A BlobProto as an array shaped as the file says; CorruptModelError if the count disagrees."""
    legacy: list[int | None] = [None] * 4
    dims: list[int] | None = None
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    pos = start
    while pos < end:
        if buf[pos] == _FLOAT_KEY:
            values, pos = wire.unpacked_run(buf, pos, end, _FLOAT_KEY, "<f4")
            floats.append(values)
            continue
        if buf[pos] == _DOUBLE_KEY:
            values, pos = wire.unpacked_run(buf, pos, end, _DOUBLE_KEY, "<f8")
            doubles.append(values)
            continue
        field, pos = wire.read_field(buf, pos, end)
        if 1 <= field.number <= 4 and field.wire_type == wire.VARINT:
            legacy[field.number - 1] = wire.to_signed64(field.value)
        elif field.number == BLOB_SHAPE and field.wire_type == wire.LENGTH_DELIMITED:
            dims = [int(d) for d in decode_message(buf, *field.value, "BlobShape").get("dim", [])]
        elif field.number in (BLOB_DATA, BLOB_DOUBLE_DATA) and field.wire_type == wire.LENGTH_DELIMITED:
            dtype, chunks = ("<f4", floats) if field.number == BLOB_DATA else ("<f8", doubles)
            chunks.append(wire.packed_array(buf, *field.value, dtype))
    if floats:
        data = np.concatenate(floats) if len(floats) > 1 else floats[0]
    elif doubles:
        data = np.concatenate(doubles) if len(doubles) > 1 else doubles[0]
    else:
        data = np.zeros(0, np.float32)
    try:
        return assemble_blob(data, blob_shape(legacy, dims))
    except CorruptModelError as err:
        raise CorruptModelError(err.problem, offset=start) from None


def decode_message(buf: wire.Buffer, start: int, end: int, schema_name: str) -> Message:
    """The message of type ``schema_name`` in ``buf[start:end]``; unknown fields skipped."""
    schema = SCHEMAS[schema_name]
    msg: Message = {}
    try:
        for field in wire.iter_fields(buf, start, end):
            definition = schema.get(field.number)
            if definition is None:
                continue
            name, kind, sub = definition
            if kind in ("msg", "blob"):
                if field.wire_type != wire.LENGTH_DELIMITED:
                    continue
                values = msg.setdefault(name, [])
                if kind == "blob":
                    try:
                        values.append(decode_blob(buf, *field.value))
                    except ConversionError as err:
                        raise err.located(blob=len(values)) from None
                else:
                    try:
                        values.append(decode_message(buf, *field.value, sub))
                    except ConversionError as err:
                        raise (err.located(layer=f"#{len(values)}") if sub in _LAYER_SCHEMAS else err) from None
                continue
            values = _scalar_values(buf, field, kind, sub)
            if values is not None:
                msg.setdefault(name, []).extend(values)
    except ConversionError as err:
        if schema_name in _LAYER_SCHEMAS and msg.get("name"):
            raise err.located(layer=msg["name"][-1]) from None
        if schema_name == "NetParameter" and err.layer is None and err.offset is not None:
            name = _peek_layer_name(buf, err.offset, end)
            if name is not None:
                raise err.located(layer=name) from None
        raise
    return msg


def _peek_layer_name(buf: wire.Buffer, offset: int, end: int) -> str | None:
    """The name of the layer whose field starts at ``offset``, read from what is left of a cut-off layer.

    A truncated file fails the length check of the outermost layer field, before that layer is decoded;
    its name usually survives at the start of the payload and makes the error message much more useful.
    """
    name = None
    try:
        key, pos = wire.decode_varint(buf, offset, end)
        name_field = {100: 1, 2: 4}.get(key >> 3)
        if name_field is None or key & 7 != wire.LENGTH_DELIMITED:
            return None
        length, pos = wire.decode_varint(buf, pos, end)
        for field in wire.iter_fields(buf, pos, min(end, pos + length)):
            if field.number == name_field and field.wire_type == wire.LENGTH_DELIMITED:
                name = bytes(buf[slice(*field.value)]).decode("utf-8", "surrogateescape")
    except CorruptModelError:
        pass
    return name


def parse_caffemodel(data: bytes, source: str | None = None) -> NetSpec:
    """The network (architecture as stored, plus blobs) in the bytes of a .caffemodel."""
    buf = memoryview(data) if not isinstance(data, memoryview) else data
    try:
        net = decode_message(buf, 0, len(buf), "NetParameter")
    except ConversionError as err:
        raise err.located(file=source) from None
    return netspec_from_message(net, source, text=False, error=CorruptModelError)


def read_caffemodel(path: str | os.PathLike) -> NetSpec:
    """The network stored in the .caffemodel at ``path``."""
    with open(path, "rb") as f:
        data = f.read()
    return parse_caffemodel(data, os.fspath(path))


# ----- writing ----------------------------------------------------------------------------------------

def _encode_scalar(number: int, kind: str, sub: Any, value: Any) -> bytes:
    """One occurrence of a scalar field."""
    if kind == "str":
        return wire.length_delimited(number, str(value).encode("utf-8", "surrogateescape"))
    if kind == "f32":
        return wire.float_field(number, float(value))
    if kind == "f64":
        return wire.double_field(number, float(value))
    if kind == "enum" and isinstance(value, str):
        codes = {name: code for code, name in sub.items()}
        if value not in codes:
            raise ConversionError(f"{value!r} is not one of {sorted(codes)}")
        value = codes[value]
    return wire.varint_field(number, int(value))


def encode_blob(array: np.ndarray, *, packed: bool = True, legacy_shape: bool = False,
                double: bool = False) -> bytes:
    """A BlobProto: shape (legacy 4-D when asked and the blob has at most 4 axes), then the values."""
    array = np.asarray(array)
    out = bytearray()
    if legacy_shape and array.ndim <= 4:
        for number, dim in enumerate((1,) * (4 - array.ndim) + array.shape, start=1):
            out += wire.varint_field(number, dim)
    else:
        dims = [wire.encode_varint(d) for d in array.shape]
        shape = (wire.length_delimited(1, b"".join(dims)) if packed and dims
                 else b"".join(wire.tag(1, wire.VARINT) + d for d in dims))
        out += wire.length_delimited(BLOB_SHAPE, shape)
    flat = array.ravel()
    if flat.size:
        number, dtype, key = ((BLOB_DOUBLE_DATA, "<f8", _DOUBLE_KEY) if double
                              else (BLOB_DATA, "<f4", _FLOAT_KEY))
        if packed:
            out += wire.length_delimited(number, flat.astype(dtype).tobytes())
        else:
            records = np.empty(flat.size, dtype=[("key", "u1"), ("value", dtype)])
            records["key"] = key
            records["value"] = flat
            out += records.tobytes()
    return bytes(out)


def encode_message(msg: Message, schema_name: str, **blob_options: bool) -> bytes:
    """A message in field-number order; fields outside the schema are not written."""
    by_name = field_by_name(schema_name)
    out = bytearray()
    for name in sorted((n for n in msg if n in by_name), key=lambda n: by_name[n][0]):
        number, kind, sub = by_name[name]
        for value in msg[name]:
            if kind == "blob":
                out += wire.length_delimited(number, encode_blob(value, **blob_options))
            elif kind == "msg":
                if sub == "BlobShape" and blob_options.get("packed", True) and value.get("dim"):
                    # caffe.proto declares dim [packed = true]
                    payload = wire.length_delimited(1, b"".join(wire.encode_varint(int(d)) for d in value["dim"]))
                else:
                    payload = encode_message(value, sub, **blob_options)
                out += wire.length_delimited(number, payload)
            else:
                try:
                    out += _encode_scalar(number, kind, sub, value)
                except (ValueError, TypeError, OverflowError) as err:
                    raise ConversionError(f"cannot write {name} = {value!r}: {err}") from None
    return bytes(out)


_V1_CODES = {V1_LAYER_TYPES[code]: name for name, code in V1_LAYER_TYPE_NAMES.items()}


def _layer_message(layer: LayerSpec, v1: bool) -> Message:
    """The LayerParameter (or V1LayerParameter) message of ``layer``."""
    msg: Message = {"name": [layer.name], "bottom": list(layer.bottoms), "top": list(layer.tops),
                    "blobs": list(layer.blobs)}
    if v1:
        if layer.type not in _V1_CODES:
            raise UnsupportedLayerError(f"layer type {layer.type} has no V1 enum value", layer=layer.name)
        msg["type"] = [_V1_CODES[layer.type]]
    else:
        msg["type"] = [layer.type]
    numbers = V1_PARAM_NUMBERS if v1 else V2_PARAM_NUMBERS
    for key, param in layer.params.items():
        if key in numbers:
            msg[key] = [param]
        elif v1 and key in PARAM_SCHEMAS:
            raise UnsupportedLayerError(f"{key} cannot be written in a V1 layer", layer=layer.name)
    if layer.phase is not None:
        msg["include"] = [{"phase": [layer.phase]}]
    return msg


def _net_message(spec: NetSpec, v1: bool, legacy_shape: bool) -> Message:
    """The NetParameter message of ``spec``; inputs made by Input layers are left to those layers."""
    net: Message = {"name": [spec.name]} if spec.name else {}
    from_layers = {top for l in spec.layers if l.type == "Input" for top in l.tops}
    inputs = [(n, s) for n, s in spec.inputs.items() if n not in from_layers]
    if inputs:
        net["input"] = [n for n, _ in inputs]
        shapes = [s for _, s in inputs]
        if any(s is None for s in shapes) and not all(s is None for s in shapes):
            raise ConversionError("either all or none of the top-level inputs must have a shape")
        if shapes[0] is not None:
            if (v1 or legacy_shape) and all(len(s) == 4 for s in shapes):
                net["input_dim"] = [int(d) for s in shapes for d in s]
            else:
                net["input_shape"] = [{"dim": [int(d) for d in s]} for s in shapes]
    net["layers" if v1 else "layer"] = [_layer_message(l, v1) for l in spec.layers]
    return net


def encode_caffemodel(spec: NetSpec, *, v1: bool = False, packed: bool = True, legacy_shape: bool = False,
                      double: bool = False) -> bytes:
    """The .caffemodel bytes of ``spec``: V2 or V1 layers, packed or unpacked values, legacy or BlobShape shapes,
    float ``data`` or ``double_data``."""
    try:
        net = _net_message(spec, v1, legacy_shape)
        return encode_message(net, "NetParameter", packed=packed, legacy_shape=legacy_shape, double=double)
    except ConversionError as err:
        raise err.located(file=spec.source) from None


def write_caffemodel(path: str | os.PathLike, spec: NetSpec, **options: bool) -> None:
    """Write ``spec`` as a .caffemodel at ``path`` (options as for ``encode_caffemodel``)."""
    data = encode_caffemodel(spec, **options)
    with open(path, "wb") as f:
        f.write(data)
