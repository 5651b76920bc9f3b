"""Binary .caffemodel reader and writer: round trips, the real files, OpenCV agreement, damaged bytes."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weights_convert import wire
from weights_convert.caffemodel import encode_caffemodel, parse_caffemodel, read_caffemodel, write_caffemodel
from weights_convert.errors import ConversionError, CorruptModelError, ModelMismatchError, UnsupportedLayerError
from weights_convert.netspec import LayerSpec, NetSpec, attach_weights, conv_params, first, lrn_params, pool_params
from weights_convert.prototxt import read_prototxt

ENCODINGS = [dict(v1=v1, packed=p, legacy_shape=l, double=d)
             for v1, p, l, d in itertools.product([False, True], repeat=4)]


def _id(options: dict) -> str:
    return "-".join(k for k, v in options.items() if v) or "v2-unpacked"


# ----- helpers ------------------------------------------------------------------------------------

def assert_specs_equal(got: NetSpec, want: NetSpec, *, legacy_shape: bool = False) -> None:
    """NetSpecs equal field by field; blobs by value (legacy files pad shapes to 4-D)."""
    assert (got.name, dict(got.inputs), got.source) == (want.name, dict(want.inputs), want.source)
    assert [l.name for l in got.layers] == [l.name for l in want.layers]
    for g, w in zip(got.layers, want.layers):
        assert (g.type, g.bottoms, g.tops, g.phase) == (w.type, w.bottoms, w.tops, w.phase), w.name
        assert dict(g.params) == dict(w.params), w.name
        assert len(g.blobs) == len(w.blobs), w.name
        for gb, wb in zip(g.blobs, w.blobs):
            shape = (1,) * (4 - wb.ndim) + wb.shape if legacy_shape and wb.ndim <= 4 else wb.shape
            assert gb.shape == shape, w.name
            np.testing.assert_array_equal(gb.reshape(wb.shape), wb)


def tiny_spec(rng: np.random.Generator, *, v1: bool, source: str | None = None) -> NetSpec:
    """A small network using every parameter message the reader decodes (V1-representable ones for ``v1``)."""
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    layers = [
        LayerSpec("conv1", "Convolution", ("data",), ("conv1",),
                  {"convolution_param": {"num_output": [4], "kernel_size": [3], "stride": [1], "pad": [1],
                                         "group": [1], "bias_term": [True], "dilation": [1], "engine": ["CAFFE"]}},
                  (f32(4, 2, 3, 3), f32(4))),
        LayerSpec("relu1", "ReLU", ("conv1",), ("conv1",), {"relu_param": {"negative_slope": [0.3]}}),
        LayerSpec("pool1", "Pooling", ("conv1",), ("pool1",),
                  {"pooling_param": {"pool": ["AVE"], "kernel_size": [2], "stride": [2], "pad": [0]}}),
        LayerSpec("norm1", "LRN", ("pool1",), ("norm1",),
                  {"lrn_param": {"local_size": [3], "alpha": [5e-05], "beta": [0.75], "k": [1.0],
                                 "norm_region": ["WITHIN_CHANNEL"]}}),
        LayerSpec("deconv", "Deconvolution", ("norm1",), ("deconv",),
                  {"convolution_param": {"num_output": [2], "kernel_h": [4], "kernel_w": [2], "stride_h": [2],
                                         "stride_w": [1], "pad_h": [1], "pad_w": [0], "group": [2]}},
                  (f32(4, 1, 4, 2), f32(2))),
        LayerSpec("drop", "Dropout", ("deconv",), ("deconv",), {"dropout_param": {"dropout_ratio": [0.5]}},
                  phase="TRAIN"),
        LayerSpec("ip", "InnerProduct", ("deconv",), ("ip",),
                  {"inner_product_param": {"num_output": [3], "bias_term": [True], "axis": [1],
                                           "transpose": [False]}}, (f32(1, 1, 3, 16), f32(1, 1, 1, 3))),
        LayerSpec("prob", "Softmax", ("ip",), ("prob",), {"softmax_param": {"axis": [-1]}}, phase="TEST"),
    ]
    inputs: dict = {"data": (1, 2, 4, 4)}
    if not v1:
        layers = [LayerSpec("input", "Input", (), ("data",), {"input_param": {"shape": [{"dim": [1, 2, 4, 4]}]}})] + layers
        layers += [
            LayerSpec("prelu", "PReLU", ("ip",), ("ip2",), {"prelu_param": {"channel_shared": [False]}}, (f32(3),)),
            LayerSpec("reshape", "Reshape", ("ip2",), ("r",),
                      {"reshape_param": {"shape": [{"dim": [0, -1, 1, 1]}], "axis": [0], "num_axes": [-1]}}),
            LayerSpec("bn", "BatchNorm", ("r",), ("r",), {"batch_norm_param": {"use_global_stats": [True],
                                                                                "eps": [1e-05]}},
                      (f32(3), f32(3), f32(1))),
            LayerSpec("scale", "Scale", ("r",), ("r",), {"scale_param": {"bias_term": [True]}}, (f32(3), f32(3))),
            LayerSpec("flat", "Flatten", ("r",), ("flat",), {"flatten_param": {"axis": [1], "end_axis": [-1]}}),
            LayerSpec("big", "InnerProduct", ("flat",), ("big",), {"inner_product_param": {"num_output": [2]}},
                      (f32(2, 3, 1, 1, 1),)),  # a 5-D blob: legacy files must fall back to BlobShape
        ]
        inputs["extra"] = (3,)
        layers.append(LayerSpec("extra_in", "Input", (), ("extra",), {"input_param": {"shape": [{"dim": [3]}]}}))
    return NetSpec("tiny", inputs, tuple(layers), source=source)


# ----- round trips --------------------------------------------------------------------------------

@pytest.mark.parametrize("options", ENCODINGS, ids=_id)
def test_round_trip_all_encodings(options):
    spec = tiny_spec(np.random.default_rng(0), v1=options["v1"], source="tiny.caffemodel")
    data = encode_caffemodel(spec, **options)
    got = parse_caffemodel(data, "tiny.caffemodel")
    assert_specs_equal(got, spec, legacy_shape=options["legacy_shape"])
    for layer in got.layers:
        for blob in layer.blobs:
            assert blob.dtype == (np.float64 if options["double"] else np.float32)
            assert blob.flags.writeable
    if not options["v1"]:  # a 5-D blob has no legacy form: it keeps its BlobShape
        assert got.layer("big").blobs[0].shape == (2, 3, 1, 1, 1)


def test_encodings_differ_on_the_wire():
    spec = tiny_spec(np.random.default_rng(0), v1=True)
    blobs = {_id(o): encode_caffemodel(spec, **o) for o in ENCODINGS if o["v1"]}
    assert len(set(blobs.values())) == len(blobs)
    v2 = encode_caffemodel(tiny_spec(np.random.default_rng(0), v1=False))
    assert wire.decode_varint(v2, 0)[0] >> 3 == 1  # name first
    fields = {f.number for f in wire.iter_fields(v2)}
    assert 100 in fields and 2 not in fields
    assert 2 in {f.number for f in wire.iter_fields(blobs["v1-packed"])}


def test_write_and_read_file(tmp_path):
    spec = tiny_spec(np.random.default_rng(1), v1=False)
    path = tmp_path / "net.caffemodel"
    write_caffemodel(path, spec, packed=False)
    got = read_caffemodel(path)
    assert got.source == str(path)
    assert_specs_equal(got, dataclasses.replace(spec, source=str(path)))


def test_v1_refuses_types_without_enum():
    spec = tiny_spec(np.random.default_rng(0), v1=False)
    with pytest.raises(UnsupportedLayerError, match="Input has no V1 enum"):
        encode_caffemodel(spec, v1=True)


def test_double_data_used_only_when_data_empty():
    blob = (wire.length_delimited(7, wire.length_delimited(1, b"\x02"))
            + wire.length_delimited(8, np.array([1.0, 2.0], "<f8").tobytes())
            + wire.length_delimited(5, np.array([3.0, 4.0], "<f4").tobytes()))
    layer = wire.length_delimited(1, b"l") + wire.length_delimited(2, b"Scale") + wire.length_delimited(7, blob)
    got = parse_caffemodel(wire.length_delimited(100, layer))
    np.testing.assert_array_equal(got.layers[0].blobs[0], [3.0, 4.0])
    assert got.layers[0].blobs[0].dtype == np.float32


def test_unknown_fields_are_skipped():
    spec = tiny_spec(np.random.default_rng(0), v1=False)
    data = encode_caffemodel(spec)
    junk = (wire.varint_field(7000, 5) + wire.double_field(9, 1.0) + wire.float_field(77, 2.0)
            + wire.length_delimited(6, wire.varint_field(1, 1)))  # NetParameter.state etc.
    got = parse_caffemodel(junk + data + junk)
    assert_specs_equal(got, spec)


# ----- the real files -----------------------------------------------------------------------------

REAL = [
    ("lenet-mnist-v1", "lenet.prototxt", "lenet_iter_10000.caffemodel"),
    ("lenet-mnist-v2", "lenet.prototxt", "lenet_iter_10000.caffemodel"),
    ("cifar10-v1", "cifar10_full.prototxt", "cifar10_full_iter_70000.caffemodel"),
    ("cifar10-v1", "cifar10_quick.prototxt", "cifar10_quick_iter_5000.caffemodel"),
    ("fsrcnn-x3", "FSRCNN_mat.prototxt", "snapshot_iter_2546000.caffemodel"),
    ("ultraface-slim320", "slim-320.prototxt", "slim-320.caffemodel"),
]


def _check_blob_shapes(net: NetSpec) -> int:
    """Every weighted layer's blob shapes agree with its prototxt parameters; returns how many were checked."""
    channels: dict[str, int] = {name: shape[1] for name, shape in net.inputs.items() if shape and len(shape) > 1}
    checked = 0
    for layer in net.layers:
        if layer.type in ("Convolution", "Deconvolution"):
            p = conv_params(layer)
            w = layer.blobs[0]
            in_ch = channels[layer.bottoms[0]]
            if layer.type == "Convolution":
                assert w.shape == (p.num_output, in_ch // p.group, *p.kernel), layer.name
            else:
                assert w.shape == (in_ch, p.num_output // p.group, *p.kernel), layer.name
            if p.bias_term:
                assert layer.blobs[1].size == p.num_output, layer.name
            channels[layer.tops[0]] = p.num_output
            checked += 1
        elif layer.type == "InnerProduct":
            n = int(first(layer.param("inner_product_param"), "num_output"))
            w = layer.blobs[0]
            assert w.shape[-2] == n and all(d == 1 for d in w.shape[:-2]), layer.name
            assert layer.blobs[1].size == n, layer.name
            channels[layer.tops[0]] = n
            checked += 1
        elif layer.type == "PReLU":
            assert layer.blobs[0].shape == (channels[layer.bottoms[0]],), layer.name
            checked += 1
        elif layer.type == "Pooling":
            pool_params(layer)
        elif layer.type == "LRN":
            lrn_params(layer)
        for top in layer.tops:
            if top not in channels and layer.bottoms and layer.bottoms[0] in channels:
                channels[top] = channels[layer.bottoms[0]]
    return checked


@pytest.mark.parametrize("folder,prototxt,caffemodel", REAL, ids=[r[2] + "@" + r[0] for r in REAL])
def test_real_caffemodels_match_their_prototxt(shared_data, folder, prototxt, caffemodel):
    weights = read_caffemodel(shared_data(folder, caffemodel))
    arch = read_prototxt(shared_data(folder, prototxt))
    for layer in weights.layers:
        if layer.blobs:
            assert arch.layer(layer.name).type == layer.type
    net = attach_weights(arch, weights)
    assert _check_blob_shapes(net) == sum(1 for l in weights.layers if l.blobs)


def test_lenet_v1_has_legacy_4d_blobs(shared_data):
    net = read_caffemodel(shared_data("lenet-mnist-v1", "lenet_iter_10000.caffemodel"))
    assert [l.type for l in net.layers] == ["Data", "Convolution", "Pooling", "Convolution", "Pooling",
                                            "InnerProduct", "ReLU", "InnerProduct", "SoftmaxWithLoss"]
    shapes = {l.name: [b.shape for b in l.blobs] for l in net.layers if l.blobs}
    assert shapes == {"conv1": [(20, 1, 5, 5), (1, 1, 1, 20)], "conv2": [(50, 20, 5, 5), (1, 1, 1, 50)],
                      "ip1": [(1, 1, 500, 800), (1, 1, 1, 500)], "ip2": [(1, 1, 10, 500), (1, 1, 1, 10)]}
    assert net.layer("mnist").phase == "TRAIN"
    assert first(net.layer("pool1").param("pooling_param"), "pool") == "MAX"


def test_lenet_v1_and_v2_store_the_same_kind_of_net(shared_data):
    v1 = read_caffemodel(shared_data("lenet-mnist-v1", "lenet_iter_10000.caffemodel"))
    v2 = read_caffemodel(shared_data("lenet-mnist-v2", "lenet_iter_10000.caffemodel"))
    assert [(l.name, l.type) for l in v1.layers] == [(l.name, l.type) for l in v2.layers]
    assert v2.layer("ip1").blobs[0].shape == (500, 800)
    assert v1.layer("conv1").params == v2.layer("conv1").params


def test_real_file_round_trips(shared_data):
    for folder, _, caffemodel in REAL:
        net = read_caffemodel(shared_data(folder, caffemodel))
        v1 = folder.endswith("v1")
        again = parse_caffemodel(encode_caffemodel(net, v1=v1, legacy_shape=v1), net.source)
        assert_specs_equal(again, net)


def test_ultraface_grouped_conv_and_permute(shared_data):
    net = read_caffemodel(shared_data("ultraface-slim320", "slim-320.caffemodel"))
    assert net.inputs == {"input": (1, 3, 240, 320)}
    dw = net.layer("188")
    assert conv_params(dw).group == 16 and dw.blobs[0].shape == (16, 1, 3, 3)
    assert first(net.layer("233").param("permute_param"), "order") == 1
    assert net.layer("233").param("permute_param")["order"] == [0, 2, 3, 1]


# ----- OpenCV reads what we write -----------------------------------------------------------------

_V2_TEXT = """name: "tiny"
input: "data"
input_shape { dim: 1 dim: 2 dim: 6 dim: 5 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 5 } }
"""
_V1_TEXT = """name: "tiny"
input: "data"
input_dim: 1 input_dim: 2 input_dim: 6 input_dim: 5
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
         convolution_param { num_output: 4 kernel_size: 3 stride: 1 pad: 1 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "conv" top: "fc" inner_product_param { num_output: 5 } }
"""


def _numpy_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Convolution (3x3, pad 1) then inner product, directly from Caffe's definitions."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    conv = np.empty((1, w.shape[0], h, wd))
    for i in range(h):
        for j in range(wd):
            conv[0, :, i, j] = np.einsum("oikl,ikl->o", w, padded[0, :, i:i + 3, j:j + 3]) + b
    return conv.reshape(1, -1) @ w2.reshape(w2.shape[-2], -1).T + b2.ravel()


@pytest.mark.parametrize("v1,packed,legacy", list(itertools.product([False, True], repeat=3)))
def test_opencv_reads_our_caffemodel(tmp_path, v1, packed, legacy):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((4, 2, 3, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    w2, b2 = rng.standard_normal((5, 120)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    spec = NetSpec("tiny", {"data": (1, 2, 6, 5)}, (
        LayerSpec("conv", "Convolution", ("data",), ("conv",),
                  {"convolution_param": {"num_output": [4], "kernel_size": [3], "stride": [1], "pad": [1]}}, (w, b)),
        LayerSpec("fc", "InnerProduct", ("conv",), ("fc",), {"inner_product_param": {"num_output": [5]}}, (w2, b2)),
    ))
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(_V1_TEXT if v1 else _V2_TEXT)
    model = tmp_path / "tiny.caffemodel"
    write_caffemodel(model, spec, v1=v1, packed=packed, legacy_shape=legacy)
    net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    x = rng.standard_normal((1, 2, 6, 5)).astype(np.float32)
    net.setInput(x)
    np.testing.assert_allclose(net.forward(), _numpy_forward(x, w, b, w2, b2), rtol=1e-4, atol=1e-4)
    # and our reader agrees with what we wrote
    assert_specs_equal(read_caffemodel(model), dataclasses.replace(spec, source=str(model)), legacy_shape=legacy)


# ----- damaged bytes ------------------------------------------------------------------------------

SOURCE = "damaged.caffemodel"
_SMALL = {v1: encode_caffemodel(tiny_spec(np.random.default_rng(5), v1=v1), v1=v1, packed=not v1)
          for v1 in (False, True)}


def _parse_or_error(data: bytes) -> NetSpec | ConversionError:
    """The parse result, or the ConversionError raised; any other exception fails the test."""
    try:
        return parse_caffemodel(data, SOURCE)
    except ConversionError as err:
        assert f"file {SOURCE}" in str(err)
        return err


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff" * 16, b"hello world, not a model", bytes(range(256))])
def test_garbage_raises_corrupt(data):
    with pytest.raises(CorruptModelError, match=f"file {SOURCE}"):
        parse_caffemodel(data, SOURCE)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.caffemodel"
    path.write_bytes(b"")
    with pytest.raises(CorruptModelError, match="no layers.*empty.caffemodel"):
        read_caffemodel(path)


@pytest.mark.parametrize("v1", [False, True])
def test_every_truncation_raises(v1):
    data = _SMALL[v1]
    full = parse_caffemodel(data)
    for length in range(len(data)):
        result = _parse_or_error(data[:length])
        # a cut between whole fields leaves a valid but smaller net (fewer layers, or V1's trailing
        # input fields gone); a cut anywhere else must be an error
        if isinstance(result, NetSpec):
            assert len(result.layers) < len(full.layers) or dict(result.inputs) != dict(full.inputs)


def test_truncated_error_names_layer_and_blob():
    data = _SMALL[False]
    spec = parse_caffemodel(data)
    offset = data.index(spec.layer("conv1").blobs[0].astype("<f4").tobytes())
    with pytest.raises(CorruptModelError) as info:
        parse_caffemodel(data[:offset + 10], SOURCE)
    message = str(info.value)
    assert f"file {SOURCE}" in message and "layer 'conv1'" in message and "byte offset" in message


def _blob_layer(name: str, shape: tuple[int, ...], count: int, legacy: bool = False) -> bytes:
    if legacy:
        header = b"".join(wire.varint_field(i + 1, d) for i, d in enumerate(shape))
    else:
        header = wire.length_delimited(7, wire.length_delimited(1, b"".join(wire.encode_varint(d) for d in shape)))
    blob = header + wire.length_delimited(5, np.ones(count, "<f4").tobytes())
    good = wire.length_delimited(7, wire.length_delimited(1, b"\x03")) + wire.length_delimited(5, np.ones(3, "<f4").tobytes())
    return wire.length_delimited(100, wire.length_delimited(1, name.encode()) + wire.length_delimited(2, b"Convolution")
                                 + wire.length_delimited(7, good) + wire.length_delimited(7, blob))


@pytest.mark.parametrize("legacy", [False, True])
def test_blob_count_disagrees_with_shape(legacy):
    data = _blob_layer("conv7", (1, 2, 3, 1) if legacy else (2, 3), 5, legacy)
    with pytest.raises(CorruptModelError, match=r"5 values but its shape .* needs 6") as info:
        parse_caffemodel(data, SOURCE)
    assert (info.value.file, info.value.layer, info.value.blob) == (SOURCE, "conv7", 1)
    assert f"file {SOURCE}" in str(info.value) and "layer 'conv7'" in str(info.value) and "blob 1" in str(info.value)


def test_error_before_layer_name_uses_index():
    layer = wire.length_delimited(7, wire.length_delimited(5, b"\x00\x00\x00"))  # 3-byte float payload
    with pytest.raises(CorruptModelError, match=r"layer '#0'.*blob 0"):
        parse_caffemodel(wire.length_delimited(100, layer), SOURCE)


def test_mixed_v1_v2_layers_rejected():
    data = _SMALL[False] + _SMALL[True]
    with pytest.raises(CorruptModelError, match="mixes"):
        parse_caffemodel(data, SOURCE)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v1=st.booleans(), cut=st.integers(0, 10_000),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)), max_size=4),
       garbage=st.binary(max_size=8), where=st.integers(0, 10_000))
def test_random_damage_never_escapes(v1, cut, flips, garbage, where):
    data = bytearray(_SMALL[v1])
    for pos, bit in flips:
        data[pos % len(data)] ^= 1 << bit
    where %= len(data) + 1
    data[where:where] = garbage
    result = _parse_or_error(bytes(data[:cut % (len(data) + 1)]))
    assert isinstance(result, (NetSpec, ConversionError))


# ----- attach_weights -----------------------------------------------------------------------------

def test_attach_weights_errors_name_both_files(shared_data):
    arch = read_prototxt(shared_data("lenet-mnist-v2", "lenet.prototxt"))
    weights = read_caffemodel(shared_data("lenet-mnist-v2", "lenet_iter_10000.caffemodel"))
    no_ip2 = dataclasses.replace(weights, layers=tuple(l for l in weights.layers if l.name != "ip2"))
    with pytest.raises(ModelMismatchError, match="ip2") as info:
        attach_weights(arch, no_ip2)
    assert "lenet.prototxt" in str(info.value) and "lenet_iter_10000.caffemodel" in str(info.value)
    assert info.value.layer == "ip2"
    arch_no_ip2 = dataclasses.replace(arch, layers=tuple(l for l in arch.layers if l.name != "ip2"))
    with pytest.raises(ModelMismatchError, match="blobs for layer 'ip2'") as info:
        attach_weights(arch_no_ip2, weights)
    assert "lenet.prototxt" in str(info.value) and "lenet_iter_10000.caffemodel" in str(info.value)


def test_attach_weights_filters_train_layers(shared_data):
    arch = read_prototxt(shared_data("lenet-mnist-v1", "lenet_train_test.prototxt"))
    weights = read_caffemodel(shared_data("lenet-mnist-v1", "lenet_iter_10000.caffemodel"))
    net = attach_weights(arch, weights)
    assert [l.phase for l in net.layers if l.name == "mnist"] == ["TEST"]
    assert "TRAIN" not in {l.phase for l in net.layers}
    np.testing.assert_array_equal(net.layer("ip1").blobs[0], weights.layer("ip1").blobs[0])
    assert net.layer("pool1").blobs == ()
    assert net.source == arch.source
