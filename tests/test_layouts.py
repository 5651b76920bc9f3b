"""weights_convert.layouts: Caffe-layout weights in numpy == Flax modules with converted params."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz.models.caffenet import CaffeNet, CaffeNetConfig, ConvSpec
from jaxviz.models.generator import DECONV_LAYERS, FC_LAYERS, DeconvSpec, Generator, GeneratorConfig
from jaxviz.models.modules import CaffeConv, CaffeDeconv, CaffeDense
from tests.helpers import caffe_reference as ref
from weights_convert import layouts
from weights_convert.errors import ModelMismatchError

TOL = dict(rtol=2e-4, atol=2e-4)


def _rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _apply(module, params, x):
    return np.asarray(module.apply({"params": params}, jnp.asarray(x)))


def test_conv_module_with_converted_params_matches_caffe():
    rng = np.random.default_rng(0)
    x, w, b = _rand(rng, 2, 4, 11, 10), _rand(rng, 6, 2, 3, 3), _rand(rng, 6)  # NCHW, [O, I/g, kh, kw]
    module = CaffeConv(6, (3, 3), (2, 2), (1, 1), group=2)
    got = _apply(module, {"kernel": layouts.conv_kernel(w), "bias": layouts.bias_vector(b, 6)}, ref.nhwc(x))
    np.testing.assert_allclose(got, ref.nhwc(ref.conv(x, w, b, 2, 1, 2)), **TOL)


def test_deconv_module_with_converted_params_matches_caffe():
    rng = np.random.default_rng(1)
    x, w, b = _rand(rng, 2, 4, 3, 5), _rand(rng, 4, 3, 4, 4), _rand(rng, 6)  # [I, O/g, kh, kw], group 2
    module = CaffeDeconv(6, (4, 4), (2, 2), (1, 1), group=2)
    got = _apply(module, {"kernel": layouts.deconv_kernel(w, 2), "bias": b}, ref.nhwc(x))
    np.testing.assert_allclose(got, ref.nhwc(ref.deconv(x, w, b, 2, 1, 2)), **TOL)


def test_inner_product_on_vectors():
    rng = np.random.default_rng(2)
    x, w, b = _rand(rng, 3, 7), _rand(rng, 5, 7), _rand(rng, 5)
    got = _apply(CaffeDense(5), {"kernel": layouts.inner_product_kernel(w), "bias": b}, x)
    np.testing.assert_allclose(got, ref.inner_product(x, w, b), **TOL)


def test_inner_product_on_a_map_reorders_rows_chw_to_hwc():
    # The fc6 case: Caffe flattens pool5 in C,H,W order, jaxviz flattens NHWC in H,W,C order.
    rng = np.random.default_rng(3)
    c, h, wd = 4, 3, 2
    x, w, b = _rand(rng, 2, c, h, wd), _rand(rng, 5, c * h * wd), _rand(rng, 5)
    kernel = layouts.inner_product_kernel(w, input_chw=(c, h, wd))
    got = _apply(CaffeDense(5), {"kernel": kernel, "bias": b}, ref.nhwc(x))
    np.testing.assert_allclose(got, ref.inner_product(x, w, b), **TOL)
    # Without the reorder the result is wrong, so the test would notice a missing permutation.
    plain = _apply(CaffeDense(5), {"kernel": layouts.inner_product_kernel(w), "bias": b}, ref.nhwc(x))
    assert not np.allclose(plain, ref.inner_product(x, w, b), **TOL)


def test_defc5_reorder_makes_nhwc_reshape_equal_caffe_chw_reshape():
    rng = np.random.default_rng(4)
    chw = (3, 2, 4)
    x, w, b = _rand(rng, 2, 5), _rand(rng, 24, 5), _rand(rng, 24)
    caffe_map = ref.inner_product(x, w, b).reshape(2, *chw)  # Caffe Reshape: C, H, W
    p = layouts.generator_defc5_params(layouts.inner_product_kernel(w), b, chw)
    ours = (x @ p["kernel"] + p["bias"]).reshape(2, chw[1], chw[2], chw[0])  # the module's NHWC reshape
    np.testing.assert_allclose(ours, ref.nhwc(caffe_map), **TOL)


def test_legacy_four_d_blob_shapes_are_accepted():
    rng = np.random.default_rng(5)
    w, b = _rand(rng, 5, 7), _rand(rng, 5)
    k = layouts.inner_product_kernel(w.reshape(1, 1, 5, 7))
    np.testing.assert_array_equal(k, w.T)
    np.testing.assert_array_equal(layouts.bias_vector(b.reshape(1, 1, 1, 5), 5), b)
    np.testing.assert_array_equal(layouts.checked_blob(w.reshape(1, 1, 5, 7), (5, 7), layer="fc"), w)


def test_shape_mismatch_names_layer_and_blob():
    with pytest.raises(ModelMismatchError) as err:
        layouts.checked_blob(np.zeros((7, 5)), (5, 7), layer="fc7", index=0)
    assert "fc7" in str(err.value) and "blob 0" in str(err.value) and "(5, 7)" in str(err.value)
    with pytest.raises(ModelMismatchError, match="blob 1"):
        layouts.bias_vector(np.zeros(4), 5, layer="fc7")
    with pytest.raises(ModelMismatchError, match="group=2"):
        layouts.deconv_kernel(np.zeros((3, 2, 4, 4)), 2, layer="d")
    with pytest.raises(ModelMismatchError, match="2x2x2"):
        layouts.inner_product_kernel(np.zeros((3, 9)), input_chw=(2, 2, 2), layer="fc6")


# A small CaffeNet whose whole forward pass is recomputed with the numpy Caffe reference.
# 33 -> conv1 16 -> pool1 8 -> pool2 4 -> pool5 2: ceil rounding in pool2/pool5, a 2x2 map into fc6.
SMALL_NET = CaffeNetConfig(input_size=33, in_channels=3,
                           convs=(ConvSpec(4, 5, 2, 1, 1), ConvSpec(6, 3, 1, 1, 2), ConvSpec(4, 3, 1, 1, 1),
                                  ConvSpec(4, 3, 1, 1, 2), ConvSpec(6, 3, 1, 1, 2)),
                           lrn_alpha=1e-2, fc=(8, 7, 5))


def _random_caffenet_blobs(cfg: CaffeNetConfig, rng) -> dict[str, tuple[np.ndarray, ...]]:
    blobs, c_in = {}, cfg.in_channels
    for i, s in enumerate(cfg.convs, 1):
        blobs[f"conv{i}"] = (_rand(rng, s.features, c_in // s.group, s.kernel, s.kernel, scale=0.3),
                             _rand(rng, s.features, scale=0.1))
        c_in = s.features
    n_in = 1 * 1 * c_in * 4  # pool5 is 2x2 for this config (checked below)
    for name, width in zip(("fc6", "fc7", "fc8"), cfg.fc):
        blobs[name] = (_rand(rng, width, n_in, scale=0.3), _rand(rng, width, scale=0.1))
        n_in = width
    return blobs


def _caffenet_reference(cfg: CaffeNetConfig, blobs, x_nchw) -> dict[str, np.ndarray]:
    out, h = {}, x_nchw.astype(np.float64)
    relu = lambda a: np.maximum(a, 0)
    for i, s in enumerate(cfg.convs, 1):
        h = ref.conv(h, *blobs[f"conv{i}"], s.stride, s.pad, s.group)
        out[f"conv{i}:pre"], h = h, relu(h)
        out[f"conv{i}"] = h
        if i in (1, 2, 5):
            h = out[f"pool{i}"] = ref.max_pool(h, cfg.pool_kernel, cfg.pool_stride)
        if i in (1, 2):
            h = out[f"norm{i}"] = ref.lrn_across(h, cfg.lrn_local_size, cfg.lrn_alpha, cfg.lrn_beta, cfg.lrn_k)
    for name in ("fc6", "fc7"):
        h = out[f"{name}:pre"] = ref.inner_product(h, *blobs[name])
        h = out[name] = relu(h)
    out["fc8"] = ref.inner_product(h, *blobs["fc8"])
    e = np.exp(out["fc8"] - out["fc8"].max(-1, keepdims=True))
    out["prob"] = e / e.sum(-1, keepdims=True)
    return out


def test_caffenet_params_give_caffe_outputs_at_every_tap():
    rng = np.random.default_rng(6)
    blobs = _random_caffenet_blobs(SMALL_NET, rng)
    x = _rand(rng, 2, 3, 33, 33, scale=30.0)
    want = _caffenet_reference(SMALL_NET, blobs, x)
    assert want["pool5"].shape == (2, 6, 2, 2)
    params = layouts.caffenet_params(blobs, SMALL_NET)
    got = CaffeNet(SMALL_NET).apply({"params": params}, jnp.asarray(ref.nhwc(x)), CaffeNet.tap_names())
    for name, value in got.items():
        expected = want[name] if want[name].ndim == 2 else ref.nhwc(want[name])
        np.testing.assert_allclose(np.asarray(value), expected, rtol=1e-3, atol=1e-3, err_msg=name)


def test_caffenet_params_report_missing_and_extra_layers():
    blobs = _random_caffenet_blobs(SMALL_NET, np.random.default_rng(7))
    partial = {k: v for k, v in blobs.items() if k not in ("conv3", "fc7")}
    with pytest.raises(ModelMismatchError) as err:
        layouts.caffenet_params(partial, SMALL_NET)
    assert "conv3" in str(err.value) and "fc7" in str(err.value)
    with pytest.raises(ModelMismatchError, match="fc9"):
        layouts.caffenet_params({**blobs, "fc9": blobs["fc8"]}, SMALL_NET)
    with pytest.raises(ModelMismatchError, match="2 blobs"):
        layouts.caffenet_params({**blobs, "conv2": blobs["conv2"][:1]}, SMALL_NET)
    bad = {**blobs, "conv2": (blobs["conv2"][0][:, :1], blobs["conv2"][1])}
    with pytest.raises(ModelMismatchError, match="'conv2'.*blob 0"):
        layouts.caffenet_params(bad, SMALL_NET)
    # Layers without blobs (ReLU, pooling...) may appear in a caffemodel's layer list.
    layouts.caffenet_params({**blobs, "relu1": (), "pool1": ()}, SMALL_NET)


def test_caffenet_params_default_config_shapes():
    # Shapes only (zeros are cheap): the full CaffeNet blob shapes of models.md convert to the module's.
    cfg = CaffeNetConfig()
    shapes = {"conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
              "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216),
              "fc7": (4096, 4096), "fc8": (1000, 4096)}
    blobs = {k: (np.zeros(s, np.float32), np.zeros(s[0], np.float32)) for k, s in shapes.items()}
    params = layouts.caffenet_params(blobs, cfg)
    want = jax.eval_shape(CaffeNet(cfg).init, jax.random.key(0), jnp.zeros((1, 227, 227, 3)))["params"]
    assert jax.tree.map(np.shape, params) == jax.tree.map(lambda a: a.shape, want)


SMALL_GEN = GeneratorConfig(code_size=6, fc=(10, 9, 32), reshape=(8, 2, 2),
                            deconvs=(DeconvSpec(4, 4, 2, 1), DeconvSpec(5, 3, 1, 1), DeconvSpec(4, 4, 2, 1),
                                     DeconvSpec(4, 3, 1, 1), DeconvSpec(3, 4, 2, 1), DeconvSpec(3, 3, 1, 1),
                                     DeconvSpec(2, 3, 1, 1), DeconvSpec(2, 3, 1, 1), DeconvSpec(3, 3, 1, 1)),
                            output_size=16, crop_size=12)


def _random_generator_blobs(cfg: GeneratorConfig, rng) -> dict[str, tuple[np.ndarray, ...]]:
    blobs, n_in = {}, cfg.code_size
    for name, width in zip(FC_LAYERS, cfg.fc):
        blobs[name] = (_rand(rng, width, n_in, scale=0.4), _rand(rng, width, scale=0.1))
        n_in = width
    c_in = cfg.reshape[0]
    for name, s in zip(DECONV_LAYERS, cfg.deconvs):
        blobs[name] = (_rand(rng, c_in, s.features, s.kernel, s.kernel, scale=0.3), _rand(rng, s.features, scale=0.1))
        c_in = s.features
    return blobs


def test_generator_params_give_caffe_outputs_at_every_tap():
    rng = np.random.default_rng(8)
    cfg = SMALL_GEN
    blobs = _random_generator_blobs(cfg, rng)
    code = _rand(rng, 2, cfg.code_size)
    leaky = lambda a: np.where(a > 0, a, 0.3 * a)
    want, h = {}, code.astype(np.float64)
    for name in FC_LAYERS:
        h = want[f"{name}:pre"] = ref.inner_product(h, *blobs[name])
        h = want[name] = leaky(h)
    h = h.reshape(2, *cfg.reshape)  # Caffe's Reshape, C, H, W
    want["reshape_defc5"] = h
    for name, s in zip(DECONV_LAYERS, cfg.deconvs):
        h = want[f"{name}:pre"] = ref.deconv(h, *blobs[name], s.stride, s.pad)
        h = want[name] = leaky(h) if name != "deconv0" else h
    params = layouts.generator_params(blobs, cfg)
    got = Generator(cfg).apply({"params": params}, jnp.asarray(code), Generator.tap_names())
    assert got["deconv0"].shape == (2, 16, 16, 3)
    for name, value in got.items():
        expected = want[name] if want[name].ndim == 2 else ref.nhwc(want[name])
        np.testing.assert_allclose(np.asarray(value), expected, rtol=1e-3, atol=1e-3, err_msg=name)


def test_generator_params_report_missing_layer():
    blobs = _random_generator_blobs(SMALL_GEN, np.random.default_rng(9))
    del blobs["conv4_1"]
    with pytest.raises(ModelMismatchError, match="conv4_1"):
        layouts.generator_params(blobs, SMALL_GEN)
