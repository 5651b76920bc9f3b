"""Text-format parser and prototxt -> NetSpec mapping: syntax, V2/V1/V0 layers, inputs, real files, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weights_convert.caffemodel import encode_caffemodel, parse_caffemodel
from weights_convert.errors import ConversionError, PrototxtSyntaxError
from weights_convert.errors import CorruptModelError
from weights_convert.netspec import V1_LAYER_TYPE_NAMES, V1_LAYER_TYPES, conv_params, first, lrn_params, pool_params
from weights_convert.prototxt import parse_prototxt, parse_text_message, read_prototxt


# ----- text format --------------------------------------------------------------------------------

def test_scalars_and_comments():
    msg = parse_text_message("""
        # a comment
        i: 5  f: 0.5  e: 1e-30  neg: -3  hex: 0x1F  suf: 1.0f  dot: .25  big: 1E5  # trailing comment
        pinf: inf  ninf: -inf  nan: nan  t: true  fl: False  enum: ACROSS_CHANNELS
        s: "a \\"quoted\\" \\n string\\x41\\101"  s2: 'single'  cat: "ab" "cd"
    """)
    assert msg["i"] == [5] and isinstance(msg["i"][0], int)
    assert msg["f"] == [0.5] and msg["e"] == [1e-30] and msg["neg"] == [-3] and msg["hex"] == [31]
    assert msg["suf"] == [1.0] and isinstance(msg["suf"][0], float) and msg["dot"] == [0.25]
    assert msg["big"] == [1e5] and isinstance(msg["big"][0], float)
    assert msg["pinf"] == [math.inf] and msg["ninf"] == [-math.inf] and math.isnan(msg["nan"][0])
    assert msg["t"] == [True] and msg["fl"] == [False] and msg["enum"] == ["ACROSS_CHANNELS"]
    assert msg["s"] == ['a "quoted" \n stringAA'] and msg["s2"] == ["single"] and msg["cat"] == ["abcd"]


def test_nested_and_repeated():
    msg = parse_text_message("""
        a { x: 1 } a: { x: 2; y: [3, 4] }, b < c { d: "e" } >
        r: 1 r: 2 r: [3]
        empty {}
    """)
    assert msg["a"] == [{"x": [1]}, {"x": [2], "y": [3, 4]}]
    assert msg["b"] == [{"c": [{"d": ["e"]}]}]
    assert msg["r"] == [1, 2, 3] and msg["empty"] == [{}]


# ----- mapping to NetSpec -------------------------------------------------------------------------

_V2 = """
name: "n"
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "c" type: "Convolution" bottom: "data" top: "c"
        convolution_param { num_output: 4 kernel_h: 3 kernel_w: 1 pad_h: 1 stride_w: 2 bias_term: false
                            weight_filler { type: "xavier" } } }
layer { name: "r" type: "ReLU" bottom: "c" top: "c" relu_param { negative_slope: 0 } }
layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "n" type: "LRN" bottom: "p" top: "n" lrn_param { local_size: 3 alpha: 1 norm_region: WITHIN_CHANNEL } }
layer { name: "d" type: "Dropout" bottom: "n" top: "n" dropout_param { dropout_ratio: 0.5 } include { phase: TRAIN } }
layer { name: "ip" type: "InnerProduct" bottom: "n" top: "ip" inner_product_param { num_output: 10 } }
layer { name: "s" type: "Softmax" bottom: "ip" top: "prob" include { phase: TEST } }
layer { name: "x" type: "Softmax" bottom: "ip" top: "x" exclude { phase: TEST } }
"""


def test_v2_layers_params_and_typing():
    net = parse_prototxt(_V2, "net.prototxt")
    assert net.name == "n" and net.source == "net.prototxt"
    assert net.inputs == {"data": (2, 3, 8, 8)}
    assert [l.type for l in net.layers] == ["Input", "Convolution", "ReLU", "Pooling", "LRN", "Dropout",
                                            "InnerProduct", "Softmax", "Softmax"]
    conv = net.layer("c")
    p = conv_params(conv)
    assert (p.kernel, p.pad, p.stride, p.bias_term) == ((3, 1), (1, 0), (1, 2), False)
    assert conv.param("convolution_param")["weight_filler"] == [{"type": ["xavier"]}]
    # values typed as caffe.proto declares them, whatever the text looked like
    relu = net.layer("r").param("relu_param")["negative_slope"][0]
    assert relu == 0.0 and isinstance(relu, float)
    assert lrn_params(net.layer("n")).alpha == 1.0 and isinstance(first(net.layer("n").param("lrn_param"), "alpha"), float)
    assert pool_params(net.layer("p")).method == "AVE"
    assert [l.phase for l in net.layers][-4:] == ["TRAIN", None, "TEST", "TRAIN"]


def test_text_and_binary_give_equal_params():
    net = parse_prototxt(_V2, "net.prototxt")
    again = parse_caffemodel(encode_caffemodel(net), "net.prototxt")
    for a, b in zip(net.layers, again.layers):
        assert (a.name, a.type, a.bottoms, a.tops, a.phase) == (b.name, b.type, b.bottoms, b.tops, b.phase)
        assert dict(a.params) == dict(b.params)
    assert again.inputs == net.inputs


def test_v1_layers_and_input_dim():
    net = parse_prototxt("""
        input: "data" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 4
        input: "aux" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 2
        layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" blobs_lr: 1 convolution_param { num_output: 2 kernel_size: 3 } }
        layers { name: "d" type: DECONVOLUTION bottom: "c" top: "d" convolution_param { num_output: 2 kernel_size: 2 } }
        layers { name: "ip" type: INNER_PRODUCT bottom: "d" top: "ip" inner_product_param { num_output: 2 } }
        layers { name: "l" type: SOFTMAX_LOSS bottom: "ip" top: "l" }
    """, "v1.prototxt")
    assert net.inputs == {"data": (1, 3, 4, 4), "aux": (1, 1, 1, 2)}
    assert [l.type for l in net.layers] == ["Convolution", "Deconvolution", "InnerProduct", "SoftmaxWithLoss"]


def test_input_shape_and_unshaped_input():
    assert parse_prototxt('input: "a" input_shape { dim: 1 dim: 4096 } layer { name: "x" type: "ReLU" }').inputs \
        == {"a": (1, 4096)}
    assert parse_prototxt('input: "a" layer { name: "x" type: "ReLU" }').inputs == {"a": None}


def test_text_blobs_are_read():
    net = parse_prototxt('layer { name: "s" type: "Scale" blobs { shape { dim: 2 } data: 1 data: 2.5 } }')
    np.testing.assert_array_equal(net.layers[0].blobs[0], np.array([1, 2.5], np.float32))


# ----- the real prototxts -------------------------------------------------------------------------

_V1_ONLY_NAMES = set(V1_LAYER_TYPE_NAMES) - set(V1_LAYER_TYPES.values())  # CONVOLUTION, not LRN

REAL = [("lenet-mnist-v1", "lenet.prototxt"), ("lenet-mnist-v1", "lenet_train_test.prototxt"),
        ("lenet-mnist-v2", "lenet.prototxt"), ("lenet-mnist-v2", "lenet_train_test.prototxt"),
        ("cifar10-v1", "cifar10_full.prototxt"), ("cifar10-v1", "cifar10_full_train_test.prototxt"),
        ("cifar10-v1", "cifar10_quick.prototxt"), ("cifar10-v1", "cifar10_quick_train_test.prototxt"),
        ("fsrcnn-x3", "FSRCNN_mat.prototxt"), ("fsrcnn-x3", "fsrcnn_net.prototxt"),
        ("ultraface-slim320", "slim-320.prototxt"), ("dgn-am", "nets", "caffenet", "caffenet.prototxt"),
        ("dgn-am", "nets", "upconv", "fc6", "generator.prototxt"),
        ("dgn-am", "nets", "placesCNN", "places205CNN_deploy_updated.prototxt")]


@pytest.mark.parametrize("parts", REAL, ids=["/".join(p) for p in REAL])
def test_real_prototxts_parse(shared_data, parts):
    net = read_prototxt(shared_data(*parts))
    assert net.layers and all(l.name and l.type for l in net.layers)
    assert not any(l.type.startswith("V1Type") or l.type in _V1_ONLY_NAMES for l in net.layers)
    for layer in net.layers:
        if layer.type in ("Convolution", "Deconvolution"):
            conv_params(layer)
        elif layer.type == "Pooling":
            pool_params(layer)


def test_caffenet_prototxt(shared_data):
    net = read_prototxt(shared_data("dgn-am", "nets", "caffenet", "caffenet.prototxt"))
    assert net.inputs == {"data": (1, 3, 227, 227)}
    weighted = [(l.name, l.type) for l in net.layers if l.type in ("Convolution", "InnerProduct")]
    assert weighted == [("conv1", "Convolution"), ("conv2", "Convolution"), ("conv3", "Convolution"),
                        ("conv4", "Convolution"), ("conv5", "Convolution"), ("fc6", "InnerProduct"),
                        ("fc7", "InnerProduct"), ("fc8", "InnerProduct")]
    c1, c2 = conv_params(net.layer("conv1")), conv_params(net.layer("conv2"))
    assert (c1.num_output, c1.kernel, c1.stride, c1.pad) == (96, (11, 11), (4, 4), (0, 0))
    assert (c2.num_output, c2.kernel, c2.pad, c2.group) == (256, (5, 5), (2, 2), 2)
    assert [conv_params(net.layer(n)).group for n in ("conv3", "conv4", "conv5")] == [1, 2, 2]
    p1 = pool_params(net.layer("pool1"))
    assert (p1.method, p1.kernel, p1.stride) == ("MAX", (3, 3), (2, 2))
    n1 = lrn_params(net.layer("norm1"))
    assert (n1.local_size, n1.alpha, n1.beta, n1.k, n1.region) == (5, 1e-4, 0.75, 1.0, "ACROSS_CHANNELS")
    assert net.layers.index(net.layer("pool1")) < net.layers.index(net.layer("norm1"))  # pool before LRN
    assert first(net.layer("fc8").param("inner_product_param"), "num_output") == 1000


def test_generator_prototxt(shared_data):
    net = read_prototxt(shared_data("dgn-am", "nets", "upconv", "fc6", "generator.prototxt"))
    assert net.inputs == {"feat": (1, 4096)}
    deconvs = [l for l in net.layers if l.type == "Deconvolution"]
    assert [l.name for l in deconvs] == ["deconv5", "conv5_1", "deconv4", "conv4_1", "deconv3", "conv3_1",
                                         "deconv2", "deconv1", "deconv0"]
    assert [conv_params(l).num_output for l in deconvs] == [256, 512, 256, 256, 128, 128, 64, 32, 3]
    assert [(conv_params(l).kernel[0], conv_params(l).stride[0], conv_params(l).pad[0]) for l in deconvs[:2]] \
        == [(4, 2, 1), (3, 1, 1)]
    reshape = net.layer("reshape").param("reshape_param")
    assert reshape["shape"] == [{"dim": [1, 256, 4, 4]}]
    slopes = {first(l.param("relu_param"), "negative_slope") for l in net.layers if l.type == "ReLU"}
    assert slopes == {0.3}
    assert "relu_deconv0" not in {l.name for l in net.layers}  # deconv0 is linear


def test_places205_v0_layers_are_upgraded(shared_data):
    net = read_prototxt(shared_data("dgn-am", "nets", "placesCNN", "places205CNN_deploy_updated.prototxt"))
    assert net.name == "Places205-CNN" and net.inputs == {"data": (1, 3, 227, 227)}
    assert [l.type for l in net.layers][:5] == ["Convolution", "ReLU", "Pooling", "LRN", "Convolution"]
    c1 = conv_params(net.layer("conv1"))
    assert (c1.num_output, c1.kernel, c1.stride) == (96, (11, 11), (4, 4))
    assert conv_params(net.layer("conv2")).group == 2
    assert pool_params(net.layer("pool1")).method == "MAX"
    assert lrn_params(net.layer("norm1")).alpha == 1e-4
    assert first(net.layer("fc8").param("inner_product_param"), "num_output") == 205
    assert first(net.layer("drop6").param("dropout_param"), "dropout_ratio") == 0.5
    assert net.layer("conv1").bottoms == ("data",) and net.layer("conv1").tops == ("conv1",)


def test_v1_deploy_matches_v2_deploy(shared_data):
    v1 = read_prototxt(shared_data("lenet-mnist-v1", "lenet.prototxt"))
    v2 = read_prototxt(shared_data("lenet-mnist-v2", "lenet.prototxt"))
    assert v1.inputs == v2.inputs == {"data": (64, 1, 28, 28)}
    assert [(l.name, l.type) for l in v1.layers] == [(l.name, l.type) for l in v2.layers if l.type != "Input"]


# ----- syntax errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,line,what", [
    ('layer {\n  name: "a"\n', 3, "missing '}'"),
    ('layer {\n  name: "a\n}', 2, "unexpected character"),
    ("name: 'ok'\nlayer { name }", 2, "expected ':' or '{'"),
    ("}", 1, "expected a field name"),
    ("a: b: c", 1, "expected a field name"),
    ("layer {\n\n  x: @ }", 3, "unexpected character '@'"),
    ("a: [1, 2", 1, "expected ',' or ']'"),
    ("a: -MAX", 1, "'-' before identifier"),
    ('a: "\\q"', 1, "invalid escape"),
    ("a: 1st", 1, "unexpected character"),
    ("a {" * 200, 1, "nested deeper"),
    ("a:", 1, "expected a value"),
])
def test_syntax_errors_name_file_and_line(text, line, what):
    with pytest.raises(PrototxtSyntaxError) as info:
        parse_prototxt(text, "bad.prototxt")
    message = str(info.value)
    assert what in message and f"line {line}," in message and "file bad.prototxt" in message


@pytest.mark.parametrize("text,what,error", [
    ("", "no layers", PrototxtSyntaxError),
    ('layer { name: "c" type: "Convolution" convolution_param { num_output: "many" } }', "num_output",
     PrototxtSyntaxError),
    ('layer { name: "c" type: "ReLU" top: 3 }', "top", PrototxtSyntaxError),
    ('input: "a" input_dim: 1 input_dim: 2 layer { name: "r" type: "ReLU" }', "input_dim", PrototxtSyntaxError),
    ('layer { name: "c" type: "Scale" blobs { shape { dim: 3 } data: 1 } }', "needs 3", CorruptModelError),
])
def test_semantic_errors_are_conversion_errors(text, what, error):
    with pytest.raises(error) as info:
        parse_prototxt(text, "bad.prototxt")
    assert what in str(info.value) and "file bad.prototxt" in str(info.value)


def test_layer_named_in_value_error():
    with pytest.raises(PrototxtSyntaxError, match="layer 'c'"):
        parse_prototxt('layer { name: "c" type: "ReLU" relu_param { negative_slope: "x" } }', "bad.prototxt")


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.prototxt"
    path.write_bytes(b'name: "caf\xe9"')
    with pytest.raises(PrototxtSyntaxError, match="not UTF-8.*latin1.prototxt"):
        read_prototxt(path)


_SAMPLE = _V2


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, len(_SAMPLE)), pos=st.integers(0, len(_SAMPLE)),
       insert=st.text(alphabet='{}[]<>:;,"\'#\\-.0123456789eEaz_ \n', max_size=4))
def test_random_text_damage_never_escapes(cut, pos, insert):
    text = _SAMPLE[:pos] + insert + _SAMPLE[pos:]
    try:
        parse_prototxt(text[:cut + len(insert)], "fuzz.prototxt")
    except ConversionError as err:
        assert "file fuzz.prototxt" in str(err)
