"""Protocol-buffer wire-format primitives: varints, field iteration with bounds checks, packed arrays.

Positions are absolute offsets into one buffer, so every ``CorruptModelError`` names the byte offset in the
file where the problem is. Nothing here knows about Caffe; ``caffe_schema`` gives the field meanings.
"""

from __future__ import annotations

import struct
from typing import Iterator, NamedTuple

import numpy as np

from weights_convert.errors import CorruptModelError

VARINT, FIXED64, LENGTH_DELIMITED, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5
_MAX_VARINT_BYTES = 10
_U64 = 1 << 64

Buffer = bytes | bytearray | memoryview


class Field(NamedTuple):
    """One field occurrence: its number, wire type, value and where its tag starts.

    ``value`` is an int for varint / fixed32 / fixed64 fields (the raw unsigned bits) and the absolute
    ``(start, end)`` of the payload for length-delimited fields.
    """

    number: int
    wire_type: int
    value: int | tuple[int, int]
    offset: int


def decode_varint(buf: Buffer, pos: int, end: int | None = None) -> tuple[int, int]:
    """The unsigned varint at ``pos`` and the position after it."""
    end = len(buf) if end is None else end
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise CorruptModelError("truncated varint", offset=start)
        if pos - start >= _MAX_VARINT_BYTES:
            raise CorruptModelError("varint longer than 10 bytes", offset=start)
        byte = buf[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            break
        shift += 7
    if result >= _U64:
        raise CorruptModelError("varint exceeds 64 bits", offset=start)
    return result, pos


def encode_varint(value: int) -> bytes:
    """The varint encoding of ``value``; negative values as 64-bit two's complement (10 bytes), as protobuf does."""
    if value < 0:
        value += _U64
    if not 0 <= value < _U64:
        raise ValueError(f"{value} does not fit in 64 bits")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def to_signed64(value: int) -> int:
    """Reinterpret the raw unsigned varint bits as int64 (how int32/int64 fields store negatives)."""
    return value - _U64 if value >= 1 << 63 else value


def tag(number: int, wire_type: int) -> bytes:
    """The encoded key of a field."""
    return encode_varint((number << 3) | wire_type)


def read_field(buf: Buffer, pos: int, end: int) -> tuple[Field, int]:
    """The field whose key starts at ``pos`` and the position after it."""
    offset = pos
    key, pos = decode_varint(buf, pos, end)
    number, wire_type = key >> 3, key & 7
    if number == 0:
        raise CorruptModelError("field number 0", offset=offset)
    if wire_type == VARINT:
        value, pos = decode_varint(buf, pos, end)
    elif wire_type == FIXED64:
        if pos + 8 > end:
            raise CorruptModelError(f"fixed64 field {number} runs past the end", offset=offset)
        value = int.from_bytes(buf[pos:pos + 8], "little")
        pos += 8
    elif wire_type == FIXED32:
        if pos + 4 > end:
            raise CorruptModelError(f"fixed32 field {number} runs past the end", offset=offset)
        value = int.from_bytes(buf[pos:pos + 4], "little")
        pos += 4
    elif wire_type == LENGTH_DELIMITED:
        length, pos = decode_varint(buf, pos, end)
        if length > end - pos:
            raise CorruptModelError(
                f"field {number} claims {length} bytes but only {end - pos} remain", offset=offset)
        value = (pos, pos + length)
        pos += length
    elif wire_type in (START_GROUP, END_GROUP):
        # Caffe never uses groups; in a caffemodel they only appear when bytes are damaged.
        raise CorruptModelError(f"group wire type {wire_type} in field {number} is not supported", offset=offset)
    else:
        raise CorruptModelError(f"invalid wire type {wire_type} in field {number}", offset=offset)
    return Field(number, wire_type, value, offset), pos


def iter_fields(buf: Buffer, start: int = 0, end: int | None = None) -> Iterator[Field]:
    """The fields of the message in ``buf[start:end]``, in file order; malformed bytes raise CorruptModelError."""
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        field, pos = read_field(buf, pos, end)
        yield field


def packed_varints(buf: Buffer, start: int, end: int) -> list[int]:
    """The raw unsigned values of a packed repeated varint payload."""
    values = []
    pos = start
    while pos < end:
        value, pos = decode_varint(buf, pos, end)
        values.append(value)
    return values


def packed_array(buf: Buffer, start: int, end: int, dtype: str) -> np.ndarray:
    """A packed little-endian float32 (``"<f4"``) or float64 (``"<f8"``) payload as a native numpy copy."""
    width = np.dtype(dtype).itemsize
    if (end - start) % width:
        raise CorruptModelError(f"packed {dtype} payload of {end - start} bytes is not a multiple of {width}",
                                offset=start)
    # A copy, so the arrays are writable and do not pin the whole file's bytes in memory.
    return np.frombuffer(buf, dtype=dtype, count=(end - start) // width, offset=start).astype(
        np.dtype(dtype).newbyteorder("="))


def unpacked_run(buf: Buffer, pos: int, end: int, key: int, dtype: str) -> tuple[np.ndarray, int]:
    """Consecutive unpacked fixed-width values of one field starting at the tag at ``pos``.

    Writers that do not pack repeat ``key value`` for every element; reading the whole run at once with a
    strided numpy view keeps unpacked blobs as fast as packed ones. Requires a one-byte key.
    """
    width = np.dtype(dtype).itemsize
    stride = 1 + width
    count = (end - pos) // stride
    if count == 0:
        raise CorruptModelError(f"{dtype} value runs past the end", offset=pos)
    rows = np.frombuffer(buf, dtype=np.uint8, count=count * stride, offset=pos).reshape(count, stride)
    mismatch = np.flatnonzero(rows[:, 0] != key)
    run = int(mismatch[0]) if mismatch.size else count
    values = np.ascontiguousarray(rows[:run, 1:]).view(dtype).reshape(run)
    return values.astype(np.dtype(dtype).newbyteorder("=")), pos + run * stride


def fixed32_to_float(bits: int) -> float:
    """A fixed32 field's bits as float32 value."""
    return struct.unpack("<f", bits.to_bytes(4, "little"))[0]


def fixed64_to_double(bits: int) -> float:
    """A fixed64 field's bits as float64 value."""
    return struct.unpack("<d", bits.to_bytes(8, "little"))[0]


def length_delimited(number: int, payload: bytes) -> bytes:
    """A complete length-delimited field."""
    return tag(number, LENGTH_DELIMITED) + encode_varint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    """A complete varint field."""
    return tag(number, VARINT) + encode_varint(value)


def float_field(number: int, value: float) -> bytes:
    """A complete fixed32 float field."""
    with np.errstate(over="ignore"):  # out-of-range doubles become +-inf, as a C++ float cast does
        return tag(number, FIXED32) + np.asarray(value, dtype="<f4").tobytes()


def double_field(number: int, value: float) -> bytes:
    """A complete fixed64 double field."""
    return tag(number, FIXED64) + struct.pack("<d", value)
