"""Generator module: shapes per models.md, taps, early stop, crop, config checks.

Numerical equality with Caffe's layer definitions (incl. the defc5 reshape) is in test_layouts.py.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz.models.generator import (DeconvSpec, Generator, GeneratorConfig, crop_to_classifier,
                                     generator_tap_names, generator_tap_shapes)
from tests.helpers.jaxprs import primitive_names

# models.md's generator table, C x H x W rewritten as NHWC.
MODELS_MD_SHAPES = {
    "defc7": (4096,), "defc6": (4096,), "defc5": (4096,), "reshape_defc5": (4, 4, 256),
    "deconv5": (8, 8, 256), "conv5_1": (8, 8, 512), "deconv4": (16, 16, 256), "conv4_1": (16, 16, 256),
    "deconv3": (32, 32, 128), "conv3_1": (32, 32, 128), "deconv2": (64, 64, 64), "deconv1": (128, 128, 32),
    "deconv0": (256, 256, 3),
}
MODELS_MD_CAFFE_WEIGHTS = {  # Caffe [in, out, kh, kw] -> our HWIO (kh, kw, in, out)
    "deconv5": (256, 256, 4, 4), "conv5_1": (256, 512, 3, 3), "deconv4": (512, 256, 4, 4),
    "conv4_1": (256, 256, 3, 3), "deconv3": (256, 128, 4, 4), "conv3_1": (128, 128, 3, 3),
    "deconv2": (128, 64, 4, 4), "deconv1": (64, 32, 4, 4), "deconv0": (32, 3, 4, 4),
}


def test_full_generator_shapes_and_parameter_count():
    gen = Generator()
    code = jnp.zeros((2, 4096))
    out, variables = jax.eval_shape(lambda c: gen.init_with_output(jax.random.key(0), c, Generator.tap_names()),
                                    code)
    assert set(out) == set(generator_tap_names())
    for name, value in out.items():
        assert value.shape == (2, *MODELS_MD_SHAPES[name.removesuffix(":pre")]), name
    params = variables["params"]
    for name, (c_in, c_out, kh, kw) in MODELS_MD_CAFFE_WEIGHTS.items():
        assert params[name]["kernel"].shape == (kh, kw, c_in, c_out)
        assert params[name]["bias"].shape == (c_out,)
    for name in ("defc7", "defc6", "defc5"):
        assert params[name]["kernel"].shape == (4096, 4096)
    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    assert abs(n - 56.1e6) < 0.05e6  # models.md: about 56.1 M parameters
    assert generator_tap_shapes(GeneratorConfig()) == {t: MODELS_MD_SHAPES[t.removesuffix(":pre")]
                                                       for t in generator_tap_names()}


def test_crop_to_classifier_is_rows_and_columns_14_to_240():
    cfg = GeneratorConfig()
    assert cfg.crop_offset == 14
    image = jnp.arange(256 * 256 * 3, dtype=jnp.float32).reshape(1, 256, 256, 3)
    crop = crop_to_classifier(image, cfg)
    assert crop.shape == (1, 227, 227, 3)
    np.testing.assert_array_equal(crop, image[:, 14:241, 14:241])


def _small_params(cfg, seed=0):
    gen = Generator(cfg)
    shapes = jax.eval_shape(gen.init, jax.random.key(0), jnp.zeros((1, cfg.code_size)))
    rng = np.random.default_rng(seed)  # numpy draws: compiling threefry per parameter is slow on CPU
    return gen, jax.tree.map(lambda a: (rng.standard_normal(a.shape) * 0.1).astype(np.float32), shapes)


def test_mnist_generator_runs_and_taps_follow_in_place_semantics():
    cfg = GeneratorConfig.mnist()
    gen, params = _small_params(cfg)
    code = jnp.asarray(np.random.default_rng(1).standard_normal((3, cfg.code_size)), jnp.float32)
    out = jax.jit(gen.apply, static_argnums=2)(params, code, Generator.tap_names(cfg))
    for name, shape in generator_tap_shapes(cfg).items():
        assert out[name].shape == (3, *shape), name
    assert out["deconv0"].shape == (3, 32, 32, 1)
    assert crop_to_classifier(out["deconv0"], cfg).shape == (3, 28, 28, 1)
    for name in ("defc7", "conv5_1", "deconv1"):
        pre = out[f"{name}:pre"]
        np.testing.assert_allclose(out[name], jnp.where(pre > 0, pre, 0.3 * pre), rtol=1e-6)
    # defc5 taps are in Caffe's unit order (C, H, W); the reshaped map is NHWC.
    caffe_map = out["defc5"].reshape(3, *cfg.reshape)
    np.testing.assert_array_equal(out["reshape_defc5"], caffe_map.transpose(0, 2, 3, 1))


def test_generator_stops_at_deepest_tap():
    cfg = GeneratorConfig.mnist()
    gen, params = _small_params(cfg)
    code = jnp.zeros((1, cfg.code_size))

    def count(taps, primitive):
        return primitive_names(lambda p, c: gen.apply(p, c, taps), params, code).count(primitive)

    assert count(("reshape_defc5",), "conv_general_dilated") == 0
    assert count(("defc6",), "dot_general") == 2
    assert 0 < count(("deconv4",), "conv_general_dilated") < count(("deconv0",), "conv_general_dilated")
    trimmed = {"params": {k: v for k, v in params["params"].items() if k.startswith("defc")}}
    assert gen.apply(trimmed, code, ("reshape_defc5",))["reshape_defc5"].shape == (1, 4, 4, 32)


def test_unknown_tap_and_bad_code_shape():
    cfg = GeneratorConfig.mnist()
    gen, params = _small_params(cfg)
    with pytest.raises(ValueError, match=r"'deconv0:pre'.*valid taps: defc7:pre"):
        gen.apply(params, jnp.zeros((1, cfg.code_size)), ("deconv0:pre",))
    with pytest.raises(ValueError, match=r"\(N, 256\)"):
        gen.apply(params, jnp.zeros((1, 255)))


def test_config_checks_and_round_trip():
    cfg = GeneratorConfig()
    assert hash(cfg) == hash(GeneratorConfig())
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.out_channels == 3
    with pytest.raises(ValueError, match="reshape"):
        dataclasses.replace(cfg, reshape=(256, 4, 2))
    with pytest.raises(ValueError, match="output_size"):
        dataclasses.replace(cfg, output_size=227)
    with pytest.raises(ValueError, match="crop_size"):
        dataclasses.replace(cfg, crop_size=300)
    with pytest.raises(ValueError, match="9 deconv"):
        dataclasses.replace(cfg, deconvs=cfg.deconvs[:-1])
    assert dataclasses.replace(cfg, deconvs=[list(d) for d in cfg.deconvs]).deconvs[0] == DeconvSpec(256, 4, 2, 1)
