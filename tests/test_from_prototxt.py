"""Networks built from hand-written prototxts: every supported layer type against OpenCV, tap semantics,
jit/vmap, training-only layers, and the errors (unsupported types, bad shapes, bad blobs)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import caffe_reference as ref
from tests.helpers.prototxt_parity import opencv_outputs, random_blobs, relative_errors, with_blobs
from weights_convert.caffemodel import write_caffemodel
from weights_convert.errors import ModelMismatchError, UnsupportedLayerError
from weights_convert.network.axes import caffe_reshape
from weights_convert.network.blobs import params_from_blobs
from weights_convert.network.build import build_network
from weights_convert.network.load import from_caffe
from weights_convert.prototxt import parse_prototxt

MAX_REL_ERR = 1e-4


def layer(name: str, type_: str, bottoms, tops, body: str = "") -> str:
    """One V2 ``layer {}`` block."""
    bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
    tops = [tops] if isinstance(tops, str) else tops
    wiring = "".join(f'  bottom: "{b}"\n' for b in bottoms) + "".join(f'  top: "{t}"\n' for t in tops)
    return f'layer {{\n  name: "{name}"\n  type: "{type_}"\n{wiring}{body}}}\n'


def conv(n: int, k: int, pad: int = 0, stride: int = 1, group: int = 1, dilation: int = 1) -> str:
    return (f"  convolution_param {{ num_output: {n} kernel_size: {k} pad: {pad} stride: {stride} "
            f"group: {group} dilation: {dilation} }}\n")


# Input 24x20: pool1 (k3 s2) gives 12x10 by Caffe's ceil rounding, 11x9 by floor.
EVERY_LAYER = (
    'name: "every_layer"\n'
    + layer("data", "Input", [], "data", "  input_param { shape { dim: 1 dim: 3 dim: 24 dim: 20 } }\n")
    + layer("conv1", "Convolution", "data", "conv1", conv(8, 3, pad=1))
    + layer("relu1", "ReLU", "conv1", "conv1", "  relu_param { negative_slope: 0.1 }\n")
    + layer("pool1", "Pooling", "conv1", "pool1", "  pooling_param { pool: MAX kernel_size: 3 stride: 2 }\n")
    + layer("norm1", "LRN", "pool1", "norm1", "  lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 1 }\n")
    # depthwise (group = channels) and dilated
    + layer("conv2", "Convolution", "norm1", "conv2", conv(8, 3, pad=2, group=8, dilation=2))
    + layer("prelu2", "PReLU", "conv2", "conv2")
    + layer("conv3", "Convolution", "conv2", "conv3", conv(16, 3, pad=1, stride=2, group=2))
    + layer("relu3", "ReLU", "conv3", "conv3")
    + layer("norm3", "LRN", "conv3", "norm3",
            "  lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 alpha: 0.5 beta: 0.75 }\n")
    + layer("pool3", "Pooling", "norm3", "pool3", "  pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }\n")
    + layer("deconv", "Deconvolution", "conv3", "deconv", conv(6, 4, pad=1, stride=2, group=2))
    + layer("prelu_shared", "PReLU", "deconv", "deconv", "  prelu_param { channel_shared: true }\n")
    + layer("branch_a", "Convolution", "norm3", "branch_a", conv(4, 1))
    + layer("branch_b", "Convolution", "norm3", "branch_b", conv(4, 3, pad=1))
    + layer("concat", "Concat", ["branch_a", "branch_b"], "concat")
    + layer("sum", "Eltwise", ["branch_a", "branch_b"], "sum", "  eltwise_param { operation: SUM coeff: 0.5 coeff: -1 }\n")
    + layer("max", "Eltwise", ["branch_a", "branch_b"], "max", "  eltwise_param { operation: MAX }\n")
    + layer("prod", "Eltwise", ["branch_a", "branch_b"], "prod", "  eltwise_param { operation: PROD }\n")
    + layer("gpool", "Pooling", "concat", "gpool", "  pooling_param { pool: AVE global_pooling: true }\n")
    + layer("gmax", "Pooling", "concat", "gmax", "  pooling_param { pool: MAX global_pooling: true }\n")
    + layer("flat", "Flatten", "pool3", "flat")
    + layer("reshape", "Reshape", "pool3", "reshape", "  reshape_param { shape { dim: 0 dim: 8 dim: -1 dim: 4 } }\n")
    + layer("soft_map", "Softmax", "reshape", "soft_map")
    + layer("ip1", "InnerProduct", "pool3", "ip1", "  inner_product_param { num_output: 10 }\n")
    + layer("relu_ip1", "ReLU", "ip1", "ip1")
    + layer("drop1", "Dropout", "ip1", "ip1", "  dropout_param { dropout_ratio: 0.5 }\n")
    + layer("ip2", "InnerProduct", "ip1", "ip2", "  inner_product_param { num_output: 5 transpose: true }\n")
    + layer("ip_flat", "InnerProduct", "flat", "ip_flat", "  inner_product_param { num_output: 3 }\n")
    + layer("prob", "Softmax", "ip2", "prob")
)


@pytest.fixture(scope="module")
def every_layer(tmp_path_factory):
    """The every-layer net with random weights: (net, params, prototxt path, caffemodel path)."""
    folder = tmp_path_factory.mktemp("every_layer")
    proto = folder / "deploy.prototxt"
    proto.write_text(EVERY_LAYER)
    arch = parse_prototxt(EVERY_LAYER, str(proto))
    blobs = random_blobs(build_network(arch))
    blobs["ip2"] = (blobs["ip2"][0].T.copy(), blobs["ip2"][1])  # transpose: true stores [in, out]
    model = folder / "weights.caffemodel"
    write_caffemodel(model, with_blobs(arch, blobs))
    net, params = from_caffe(proto, model)
    return net, params, proto, model


def _input(shape, seed=1, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def test_every_layer_type_equals_opencv(every_layer):
    net, params, proto, model = every_layer
    x = _input((2, 3, 24, 20))
    reference = opencv_outputs(proto, model, x)
    # OpenCV ignores inner_product_param.transpose (it reads the [in, out] blob as [out, in]): ip2 and the
    # softmax after it are checked against numpy in test_inner_product_transpose instead.
    reference = {k: v for k, v in reference.items() if k not in ("ip2", "prob")}
    errors = relative_errors(net, params, x, reference)
    compared = set(errors) | {"relu_ip1", "data"}  # the in-place Dropout passes relu_ip1 on: checked as drop1
    assert compared >= set(reference), f"not compared: {set(reference) - compared}"
    assert max(errors.values()) <= MAX_REL_ERR, errors


def test_shapes_follow_caffe_rules(every_layer):
    net = every_layer[0]
    shapes = net.tap_shapes()
    assert net.input_shape == (24, 20, 3)
    assert shapes["pool1"] == (12, 10, 8)  # ceil: floor would give 11 x 9
    assert shapes["pool3"] == (4, 3, 16)
    assert shapes["deconv"] == (12, 10, 6)
    assert shapes["gpool"] == (1, 1, 8)
    assert shapes["flat"] == (192,) and shapes["ip_flat"] == (3,)
    assert shapes["reshape"] == (6, 4, 8)  # Caffe (8, 6, 4) held NHWC


def test_every_layer_against_numpy_loops(every_layer):
    """A second, loop-based reference for the chain conv1 .. pool3 and ip1 (C,H,W flatten order)."""
    net, params, _, model_path = every_layer
    from weights_convert.caffemodel import read_caffemodel
    blobs = read_caffemodel(model_path).blobs_by_layer()
    x = _input((1, 3, 24, 20), seed=3)
    h = ref.conv(x, blobs["conv1"][0], blobs["conv1"][1], 1, 1)
    pre1 = h
    h = np.where(h > 0, h, 0.1 * h)
    h = ref.max_pool(h, 3, 2)
    h = ref.lrn_across(h, 5, 0.5, 0.75, 1.0)
    norm1 = h
    ours = net.apply(params, x.transpose(0, 2, 3, 1), taps=("conv1:pre", "conv1", "norm1", "ip1:pre"))
    np.testing.assert_allclose(ref.nchw(np.asarray(ours["conv1:pre"])), pre1, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ref.nchw(np.asarray(ours["norm1"])), norm1, rtol=1e-4, atol=1e-4)
    pool3 = ref.nchw(np.asarray(net.apply(params, x.transpose(0, 2, 3, 1), taps="pool3")["pool3"]))
    ip1 = ref.inner_product(pool3, blobs["ip1"][0], blobs["ip1"][1])
    np.testing.assert_allclose(np.asarray(ours["ip1:pre"]), ip1, rtol=1e-4, atol=1e-4)


def test_inner_product_transpose(every_layer):
    net, params, _, model_path = every_layer
    from weights_convert.caffemodel import read_caffemodel
    w, b = read_caffemodel(model_path).blobs_by_layer()["ip2"]
    assert w.shape == (10, 5)  # transpose: true stores [in, out]
    out = net.apply(params, _input((2, 24, 20, 3)), taps=("ip1", "ip2", "prob"))
    want = np.asarray(out["ip1"]) @ w + b
    np.testing.assert_allclose(out["ip2"], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["prob"], jax.nn.softmax(want, axis=1), rtol=1e-5, atol=1e-6)


def test_lrn_k_is_applied():
    # OpenCV's importer drops LRN's k (the every-layer net keeps k = 1 for it); Caffe's loops use it.
    text = ('input: "x"\ninput_shape { dim: 1 dim: 7 dim: 5 dim: 4 }\n'
            + layer("n", "LRN", "x", "n", "  lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 2 }\n"))
    net = build_network(parse_prototxt(text, "lrn.prototxt"))
    x = _input((2, 7, 5, 4), seed=4, scale=2.0)
    got = ref.nchw(np.asarray(net.apply({}, ref.nhwc(x))["n"]))
    np.testing.assert_allclose(got, ref.lrn_across(x, 5, 0.5, 0.75, 2.0), rtol=1e-5, atol=1e-6)


def test_taps_default_outputs_pre_and_order(every_layer):
    net, params, _, _ = every_layer
    # Caffe's outputs: blobs no layer reads (norm3 feeds the branches, pool3 the flatten/reshape/ip1).
    assert set(net.outputs) == {"deconv", "sum", "max", "prod", "gpool", "gmax", "soft_map", "ip_flat", "prob"}
    assert net.tap_names.index("conv1:pre") < net.tap_names.index("conv1") < net.tap_names.index("pool1")
    assert "pool1:pre" not in net.tap_names  # no in-place layer rewrites pool1
    out = net.apply(params, _input((2, 24, 20, 3)))
    assert set(out) == set(net.outputs)
    both = net.apply(params, _input((2, 24, 20, 3)), taps=("conv1:pre", "conv1"))
    np.testing.assert_allclose(both["conv1"], np.where(both["conv1:pre"] > 0, both["conv1:pre"],
                                                        0.1 * both["conv1:pre"]), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown tap 'conv9'.*valid taps: conv1:pre, conv1"):
        net.apply(params, _input((1, 24, 20, 3)), taps=("conv9",))


def test_stops_at_deepest_tap(every_layer):
    net, params, _, _ = every_layer
    only_conv1 = {"conv1": params["conv1"]}  # deeper layers need no params when not reached
    out = net.apply(only_conv1, _input((1, 24, 20, 3)), taps="pool1")
    assert out["pool1"].shape == (1, 12, 10, 8)
    with pytest.raises(ValueError, match="no entry for layer 'conv2'"):
        net.apply(only_conv1, _input((1, 24, 20, 3)), taps="conv2")


def test_jit_vmap_grad_and_linen_style_params(every_layer):
    net, params, _, _ = every_layer
    x = _input((3, 24, 20, 3))
    eager = net.apply(params, x, taps=("prob", "deconv"))
    jitted = jax.jit(lambda p, x: net.apply(p, x, taps=("prob", "deconv")))(params, x)
    for k in eager:
        np.testing.assert_allclose(eager[k], jitted[k], rtol=1e-5, atol=1e-6)
    per_example = jax.vmap(lambda xi: net.apply(params, xi[None], taps="prob")["prob"][0])(x)
    np.testing.assert_allclose(per_example, eager["prob"], rtol=1e-5, atol=1e-6)
    wrapped = net.apply({"params": params}, x, taps="prob")["prob"]
    np.testing.assert_allclose(wrapped, eager["prob"], rtol=1e-6)
    g = jax.grad(lambda x: net.apply(params, x, taps="ip2")["ip2"][:, 1].sum())(jnp.asarray(x))
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0


def test_other_input_size_runs_the_convolutional_part(every_layer):
    net, params, proto, model = every_layer
    x = _input((1, 3, 31, 26), seed=5)
    reference = opencv_outputs(proto, model, x, ["conv1", "pool1", "norm1", "conv2", "conv3", "norm3",
                                                 "pool3", "deconv", "concat", "gpool", "reshape"])
    errors = relative_errors(net, params, x, reference)
    assert len(errors) == 11 and max(errors.values()) <= MAX_REL_ERR, errors


def test_random_init_has_param_shapes(every_layer):
    net = every_layer[0]
    params = net.init(jax.random.PRNGKey(0))
    assert {k: {n: v.shape for n, v in p.items()} for k, p in params.items()} == net.param_shapes
    assert net.param_shapes["conv2"] == {"kernel": (3, 3, 1, 8), "bias": (8,)}
    assert net.param_shapes["prelu_shared"] == {"slope": (1,)}
    assert net.apply(params, _input((1, 24, 20, 3)), taps="prob")["prob"].shape == (1, 5)


# ----- reshape semantics ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,dims,axis,num_axes,want", [
    ((2, 8, 3, 4), (0, -1), 0, -1, (2, 96)),
    ((2, 8, 3, 4), (0, 4, -1, 3), 0, -1, (2, 4, 8, 3)),
    ((2, 8, 3, 4), (2, 4), 1, 1, (2, 2, 4, 3, 4)),
    ((2, 8, 3, 4), (-1,), 1, -1, (2, 96)),
    ((2, 8, 3, 4), (1,), -1, 0, (2, 8, 3, 4, 1)),
    ((2, 96), (0, 6, 4, 4), 0, -1, (2, 6, 4, 4)),
])
def test_caffe_reshape_shape(shape, dims, axis, num_axes, want):
    assert caffe_reshape(shape, dims, axis, num_axes) == want


def test_caffe_reshape_rejects_bad_counts():
    with pytest.raises(UnsupportedLayerError):
        caffe_reshape((2, 8, 3, 4), (0, 5, -1), 0, -1)
    with pytest.raises(UnsupportedLayerError):
        caffe_reshape((2, 8), (0, 3), 0, -1)


def test_reshape_4d_to_4d_is_exact_in_caffe_order():
    text = ('input: "x"\ninput_shape { dim: 1 dim: 6 dim: 4 dim: 2 }\n'
            + layer("r", "Reshape", "x", "r", "  reshape_param { shape { dim: 1 dim: 3 dim: 8 dim: -1 } }\n"))
    net = build_network(parse_prototxt(text, "reshape.prototxt"))
    x = np.arange(2 * 6 * 4 * 2, dtype=np.float32).reshape(2, 6, 4, 2)  # batch 2 with a literal dim 1
    got = np.asarray(net.apply({}, x.transpose(0, 2, 3, 1))["r"]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(got, x.reshape(2, 3, 8, 2))


# ----- training-only layers and errors -----------------------------------------------------------------

TRAIN_TEST = (
    'name: "tt"\n'
    + layer("mnist", "Data", [], ["data", "label"], "  include { phase: TRAIN }\n")
    + layer("mnist_t", "Data", [], ["data", "label"], "  include { phase: TEST }\n")
    + layer("ip", "InnerProduct", "data", "ip", "  inner_product_param { num_output: 4 }\n")
    + layer("drop", "Dropout", "ip", "ip", "  include { phase: TRAIN }\n")
    + layer("acc", "Accuracy", ["ip", "label"], "acc", "  include { phase: TEST }\n")
    + layer("loss", "SoftmaxWithLoss", ["ip", "label"], "loss")
)


def test_training_only_layers_are_skipped():
    arch = parse_prototxt(TRAIN_TEST, "train_test.prototxt")
    with pytest.raises(Exception, match="shape of input 'data' is not declared"):
        build_network(arch)
    net = build_network(arch, input_shapes={"data": (1, 2, 3, 3)})
    assert [s.name for s in net.steps] == ["ip"]
    assert net.inputs == {"data": (3, 3, 2)} and net.outputs == ("ip",)


def test_unknown_layer_type_names_file_and_layer(tmp_path):
    text = ('input: "x"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
            + layer("c1", "Convolution", "x", "c1", conv(4, 3))
            + layer("mystery", "FancyNorm", "c1", "m")
            + layer("c2", "Convolution", "m", "c2", conv(4, 3)))
    path = tmp_path / "custom.prototxt"
    path.write_text(text)
    with pytest.raises(UnsupportedLayerError) as info:
        from_caffe(path)  # raised while building, before any call
    msg = str(info.value)
    assert "'FancyNorm'" in msg and "layer 'mystery'" in msg and "custom.prototxt" in msg
    assert info.value.layer == "mystery" and info.value.file == str(path)
    # The layers before it still build, when asked for only what they produce.
    net = build_network(parse_prototxt(text, str(path)), outputs=["c1"])
    assert net.tap_names == ("c1",)


def test_outputs_prunes_layers_beyond_the_backbone():
    text = ('input: "x"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
            + layer("c1", "Convolution", "x", "c1", conv(4, 3))
            + layer("r1", "ReLU", "c1", "c1")
            + layer("perm", "Permute", "c1", "p", "  permute_param { order: 0 order: 2 order: 3 order: 1 }\n"))
    with pytest.raises(UnsupportedLayerError, match="Permute"):
        build_network(parse_prototxt(text, "p.prototxt"))
    net = build_network(parse_prototxt(text, "p.prototxt"), outputs=["c1"])
    assert [s.name for s in net.steps] == ["c1", "r1"] and net.tap_names == ("c1:pre", "c1")


def test_channel_mismatch_is_reported_at_build_with_layer():
    text = ('input: "x"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
            + layer("c1", "Convolution", "x", "c1", conv(4, 3, group=2)))
    with pytest.raises(ModelMismatchError, match="do not split into 2 groups.*layer 'c1'"):
        build_network(parse_prototxt(text, "g.prototxt"))


def test_too_small_input_is_reported_at_build():
    text = ('input: "x"\ninput_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
            + layer("c1", "Convolution", "x", "c1", conv(4, 5)))
    with pytest.raises(ModelMismatchError, match="layer 'c1'"):
        build_network(parse_prototxt(text, "small.prototxt"))


def test_wrong_blob_shape_names_file_layer_and_blob():
    text = ('input: "x"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
            + layer("c1", "Convolution", "x", "c1", conv(4, 3))
            + layer("fc", "InnerProduct", "c1", "fc", "  inner_product_param { num_output: 2 }\n"))
    arch = parse_prototxt(text, "w.prototxt")
    good = {"c1": (np.zeros((4, 3, 3, 3), np.float32), np.zeros(4, np.float32)),
            "fc": (np.zeros((2, 144), np.float32), np.zeros(2, np.float32))}
    params = params_from_blobs(with_blobs(arch, good))
    assert params["fc"]["kernel"].shape == (144, 2)
    bad = dict(good, c1=(np.zeros((4, 3, 5, 5), np.float32), np.zeros(4, np.float32)))
    with pytest.raises(ModelMismatchError, match=r"w\.prototxt.*layer 'c1'.*blob 0"):
        params_from_blobs(with_blobs(arch, bad))
    missing_bias = dict(good, fc=(np.zeros((2, 144), np.float32),))
    with pytest.raises(ModelMismatchError, match="expects 2 blob.*layer 'fc'"):
        params_from_blobs(with_blobs(arch, missing_bias))


@pytest.mark.parametrize("multiplier,stride,pad,dilation", [(1, 1, 1, 1), (2, 2, 1, 1), (3, 1, 2, 2), (1, 2, 0, 3)])
def test_depthwise_conv_equals_grouped_conv(multiplier, stride, pad, dilation):
    from jaxviz.models import layers
    from weights_convert.network.depthwise import depthwise_conv2d
    x = _input((2, 11, 9, 5), seed=6)
    k = _input((3, 3, 1, 5 * multiplier), seed=7)
    b = _input((5 * multiplier,), seed=8)
    args = ((stride,) * 2, (pad,) * 2, (dilation,) * 2)
    want = layers.conv2d(x, k, b, *args, groups=5)
    np.testing.assert_allclose(depthwise_conv2d(x, k, b, *args), want, rtol=1e-5, atol=1e-5)


def test_places205_builds_from_its_deploy_prototxt(shared_data):
    """AlexNet-Places205 (the DGN-AM paper's second net) builds from its old-format prototxt."""
    from weights_convert.prototxt import read_prototxt

    net = build_network(read_prototxt(shared_data("dgn-am", "nets", "placesCNN",
                                                  "places205CNN_deploy_updated.prototxt")))
    shapes = net.tap_shapes()
    assert net.input_shape == (227, 227, 3)
    assert shapes["conv5"] == (13, 13, 256) and shapes["pool5"] == (6, 6, 256) and shapes["fc8"] == (205,)
