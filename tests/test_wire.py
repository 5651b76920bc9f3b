"""Protobuf wire-format primitives: varints, field iteration, packed and unpacked arrays, malformed bytes."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weights_convert import wire
from weights_convert.errors import CorruptModelError


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**31 - 1, 2**32, 2**63 - 1, 2**64 - 1])
def test_varint_round_trip(value):
    encoded = wire.encode_varint(value)
    assert wire.decode_varint(encoded, 0) == (value, len(encoded))
    assert len(encoded) <= 10


def test_varint_known_bytes():
    assert wire.encode_varint(300) == b"\xac\x02"
    assert wire.encode_varint(1) == b"\x01"


def test_negative_varint_is_ten_bytes_twos_complement():
    encoded = wire.encode_varint(-1)
    assert len(encoded) == 10
    raw, _ = wire.decode_varint(encoded, 0)
    assert wire.to_signed64(raw) == -1
    assert wire.to_signed64(wire.decode_varint(wire.encode_varint(-12345), 0)[0]) == -12345


def test_truncated_varint_names_offset():
    with pytest.raises(CorruptModelError, match="truncated varint.*byte offset 3"):
        wire.decode_varint(b"\x00\x00\x00\x80\x80", 3)


def test_overlong_varint():
    with pytest.raises(CorruptModelError, match="longer than 10 bytes"):
        wire.decode_varint(b"\x80" * 11 + b"\x01", 0)
    with pytest.raises(CorruptModelError, match="exceeds 64 bits"):
        wire.decode_varint(b"\xff" * 9 + b"\x7f", 0)


def _message() -> bytes:
    return (wire.varint_field(1, 150) + wire.length_delimited(2, b"abc") + wire.float_field(3, 1.5)
            + wire.double_field(4, -2.25))


def test_iter_fields_all_wire_types():
    data = b"\xff" + _message()  # a leading byte outside the range: offsets are absolute
    fields = list(wire.iter_fields(data, 1))
    assert [(f.number, f.wire_type) for f in fields] == [(1, 0), (2, 2), (3, 5), (4, 1)]
    assert fields[0].value == 150 and fields[0].offset == 1
    start, end = fields[1].value
    assert data[start:end] == b"abc"
    assert wire.fixed32_to_float(fields[2].value) == 1.5
    assert wire.fixed64_to_double(fields[3].value) == -2.25


@pytest.mark.parametrize("wire_type", [3, 4, 6, 7])
def test_bad_wire_types_raise(wire_type):
    data = wire.varint_field(1, 5) + wire.encode_varint((7 << 3) | wire_type) + b"\x00" * 8
    with pytest.raises(CorruptModelError, match=f"wire type {wire_type}.*byte offset 2"):
        list(wire.iter_fields(data))


def test_length_past_end():
    data = wire.tag(2, wire.LENGTH_DELIMITED) + wire.encode_varint(10) + b"abc"
    with pytest.raises(CorruptModelError, match="claims 10 bytes but only 3 remain.*offset 0"):
        list(wire.iter_fields(data))


@pytest.mark.parametrize("data", [wire.tag(3, wire.FIXED32) + b"\x00\x00", wire.tag(4, wire.FIXED64) + b"\x00" * 7])
def test_fixed_past_end(data):
    with pytest.raises(CorruptModelError, match="runs past the end"):
        list(wire.iter_fields(data))


def test_field_number_zero():
    with pytest.raises(CorruptModelError, match="field number 0"):
        list(wire.iter_fields(b"\x00\x01"))


def test_packed_arrays():
    values = np.arange(6, dtype=np.float32) / 3
    data = b"xx" + values.astype("<f4").tobytes()
    np.testing.assert_array_equal(wire.packed_array(data, 2, len(data), "<f4"), values)
    assert wire.packed_array(data, 2, len(data), "<f4").flags.writeable
    with pytest.raises(CorruptModelError, match="not a multiple of 4"):
        wire.packed_array(data, 2, len(data) - 1, "<f4")
    assert wire.packed_varints(b"\x01\xac\x02\x05", 0, 4) == [1, 300, 5]


def test_unpacked_run_stops_at_other_field():
    key = (5 << 3) | wire.FIXED32
    data = b"".join(bytes([key]) + struct.pack("<f", v) for v in (1.0, 2.0, 3.0)) + wire.varint_field(1, 7)
    values, pos = wire.unpacked_run(data, 0, len(data), key, "<f4")
    np.testing.assert_array_equal(values, [1.0, 2.0, 3.0])
    assert pos == 15
    with pytest.raises(CorruptModelError):
        wire.unpacked_run(data[:4], 0, 4, key, "<f4")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_parse_or_raise_corrupt(data):
    try:
        fields = list(wire.iter_fields(data))
    except CorruptModelError as err:
        assert err.offset is not None and 0 <= err.offset <= len(data)
        return
    for field in fields:
        if field.wire_type == wire.LENGTH_DELIMITED:
            start, end = field.value
            assert 0 <= start <= end <= len(data)
