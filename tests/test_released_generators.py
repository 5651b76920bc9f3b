"""The fc7, fc8 and pool5 DeePSiM generators: their tables, their bounds, conversion, and DGN-AM from each.

Layer-by-layer parity with OpenCV's Caffe importer is in ``tests/test_opencv_parity.py`` (small sizes in
the default run, the released sizes among the slow cases).
"""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz.models as jm
from jaxviz import recipes
from jaxviz.core import objectives
from jaxviz.models import shipped
from jaxviz.models.generator import CODE_LAYERS, DeconvSpec, Generator, GeneratorConfig, chw_code_to_hwc
from jaxviz.models.model import Model, code_bounds
from jaxviz.recipes.generator import generator_inversion
from tests.helpers.caffe_nets import generator_blobs, generator_prototxt
from tests.test_opencv_parity import SMALL_GENERATOR, SMALL_POOL5_GENERATOR, with_blobs
from weights_convert.caffemodel import write_caffemodel
from weights_convert.convert import convert, generator_config_from_blobs
from weights_convert.errors import ModelMismatchError
from weights_convert.layouts import generator_params
from weights_convert.prototxt import parse_prototxt


def _param_shapes(cfg: GeneratorConfig) -> dict:
    shapes = jax.eval_shape(Generator(cfg).init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, cfg.code_size), jnp.float32))["params"]
    return jax.tree_util.tree_map(lambda a: a.shape, dict(shapes))


def test_released_tables():
    """fc7 is fc6's architecture, fc8 reads 1000 logits, pool5 a 256x6x6 map through three convolutions."""
    fc6, fc7, fc8, pool5 = (GeneratorConfig.released(layer) for layer in CODE_LAYERS)
    assert fc6 == GeneratorConfig() and _param_shapes(fc7) == _param_shapes(fc6)
    assert _param_shapes(fc8)["defc7"]["kernel"] == (1000, 4096)
    p = _param_shapes(pool5)
    assert "defc7" not in p and p["Rconv6"]["kernel"] == (3, 3, 256, 512)
    assert p["Rconv8"]["kernel"] == (3, 3, 512, 512) and p["deconv5"]["kernel"] == (4, 4, 512, 256)
    shapes = jm.generator.generator_tap_shapes(pool5)
    assert shapes["Rconv8"] == (4, 4, 512) and shapes["deconv5"] == (8, 8, 256)
    for cfg in (fc7, fc8, pool5):
        assert jm.generator.generator_tap_shapes(cfg)["deconv0"] == (256, 256, 3)
    with pytest.raises(ValueError, match="conv5"):
        GeneratorConfig.released("conv5")


@pytest.mark.parametrize("layer", CODE_LAYERS)
def test_shipped_bounds_are_the_release_files(shared_data, layer):
    """DGN-AM's act_range/3x files; pool5's (the release's conv5.txt) reordered from C, H, W to H, W, C."""
    name = "conv5" if layer == "pool5" else layer
    released = np.loadtxt(shared_data("dgn-am", "act_range", "3x", f"{name}.txt"), dtype=np.float32).ravel()
    got = shipped.dgn_am_bounds(layer)
    if layer != "pool5":
        np.testing.assert_array_equal(got, released)
        return
    rng = np.random.default_rng(0)
    for c, h, w in zip(rng.integers(0, 256, 50), rng.integers(0, 6, 50), rng.integers(0, 6, 50)):
        assert got[(h * 6 + w) * 256 + c] == released[c * 36 + h * 6 + w]
    np.testing.assert_array_equal(got, chw_code_to_hwc(released, GeneratorConfig.released("pool5")))


@pytest.mark.parametrize("layer", CODE_LAYERS)
def test_code_bounds_follow_the_code_layer(layer):
    cfg = GeneratorConfig.released(layer)
    generator = Model("generator", Generator(cfg), {}, {})
    np.testing.assert_array_equal(code_bounds(generator), shipped.dgn_am_bounds(layer))


def _small_generator_for(classifier: Model, layer: str, seed: int = 0) -> Model:
    """A random generator whose codes are the embedded classifier's ``layer`` (output 32, crop 28)."""
    up = (DeconvSpec(16, 4, 2, 1), DeconvSpec(16, 3, 1, 1), DeconvSpec(16, 4, 2, 1), DeconvSpec(16, 3, 1, 1),
          DeconvSpec(8, 4, 2, 1), DeconvSpec(8, 3, 1, 1), DeconvSpec(8, 4, 2, 1), DeconvSpec(8, 4, 2, 1),
          DeconvSpec(1, 3, 1, 1))
    shape = jax.eval_shape(lambda p, x: classifier.apply(p, x, (layer,)), classifier.params,
                           jax.ShapeDtypeStruct((1, *classifier.input_shape), jnp.float32))[layer].shape[1:]
    if len(shape) == 3:  # pool5: a 3x3x64 map, three convolutions down to 1x1, then five doublings to 32
        h, w, c = shape
        cfg = GeneratorConfig(code_size=h * w * c, fc=(), reshape=(c, h, w), code_layer=layer,
                              convs=(DeconvSpec(32, 3, 1, 1), DeconvSpec(32, 3, 1, 1), DeconvSpec(32, 3, 1, 0)),
                              deconvs=up, output_size=32, crop_size=28)
    else:  # fc layers: 2x2 after the reshape, four doublings
        cfg = GeneratorConfig(code_size=shape[0], fc=(64, 64, 64), reshape=(16, 2, 2), code_layer=layer,
                              deconvs=up[:-2] + (DeconvSpec(8, 3, 1, 1), DeconvSpec(1, 3, 1, 1)),
                              output_size=32, crop_size=28)
    params = jax.tree_util.tree_map(jnp.asarray, generator_params(generator_blobs(cfg, seed), cfg))  # He-scaled
    return Model("generator", Generator(cfg), params, {"architecture": "generator"})


# pool5 is the new topology and runs by default; fc7/fc8 share fc6's, so only their wiring is new
@pytest.mark.parametrize("layer", [pytest.param("fc7", marks=pytest.mark.slow),
                                   pytest.param("fc8", marks=pytest.mark.slow), "pool5"])
def test_dgn_am_runs_from_a_generator_of_each_code_layer(layer):
    classifier = jm.load("caffenet")
    generator = _small_generator_for(classifier, layer)
    images, _ = shipped.reference_digits()
    x = jnp.asarray(images[:4, :, :, None], jnp.float32)
    recon = generator_inversion(classifier, generator, x)  # E up to the generator's code layer, flattened
    assert recon.shape == (4, 28, 28, 1) and bool(jnp.all(jnp.isfinite(recon)))

    preset = recipes.dgn_am(generator, bounds=30.0, steps=40)
    result = preset.visualize(classifier, objectives.unit("fc8"), key=jax.random.key(1), target=3)
    trace = np.asarray(result.activation).ravel()
    assert result.image.shape[-3:] == (28, 28, 1)
    # the baseline: 64 random codes from DGN-AM's own start distribution, clipped the same way; the run
    # must beat the best of them by far more than they differ among themselves (a random generator's
    # images barely move fc8, so their best may still be negative: measured gains 0.6-4.0, spread 0.002)
    codes = jnp.clip(preset.param.init(jax.random.key(5), 64), 0.0, 30.0)
    random_acts = np.asarray(classifier(preset.param.render(generator.params, codes), ("fc8",))["fc8"][:, 3])
    gain = trace[-1] - random_acts.max()
    assert gain > 50 * random_acts.std() and trace[-1] > trace[0], (trace[[0, -1]], random_acts.max())
    z = np.asarray(result.z)
    assert z.shape[-1] == generator.config.code_size
    assert z.min() >= 0.0 and z.max() <= 30.0 * 0.99 + 1e-4  # DGN-AM's clip, then its decay


def _write_generator(tmp_path, cfg: GeneratorConfig):
    proto = tmp_path / "generator.prototxt"
    proto.write_text(generator_prototxt(cfg))
    model = tmp_path / "generator.caffemodel"
    write_caffemodel(model, with_blobs(parse_prototxt(proto.read_text(), str(proto)), generator_blobs(cfg)))
    return proto, model


def test_converter_records_the_code_layer(tmp_path):
    proto, model = _write_generator(tmp_path, SMALL_POOL5_GENERATOR)
    assert jm.load("generator", convert("generator", model, tmp_path / "a", proto)).config.code_layer == "pool5"
    proto, model = _write_generator(tmp_path, SMALL_GENERATOR)
    assert jm.load("generator", convert("generator", model, tmp_path / "b", proto)).config.code_layer == "fc6"
    out = convert("generator", model, tmp_path / "c", proto, code_layer="fc7")
    assert jm.load("generator", out).config.code_layer == "fc7"


def test_converter_refuses_weights_of_another_generator(tmp_path):
    """Without a prototxt the weights tell which generator they are; a contradicting code layer is named."""
    cfg = GeneratorConfig.released("fc8")
    blobs = {"defc7": (np.zeros((4096, 1000), np.float32), np.zeros(4096, np.float32))}
    assert generator_config_from_blobs(blobs) == cfg
    with pytest.raises(ModelMismatchError, match="fc8 generator, not of the pool5"):
        generator_config_from_blobs(blobs, code_layer="pool5")


def test_cli_code_layer_is_for_generators_only(tmp_path):
    done = subprocess.run([sys.executable, "-m", "weights_convert", "caffenet", str(tmp_path / "x.caffemodel"),
                           str(tmp_path / "out"), "--code-layer", "fc7"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--code-layer" in lines[0] and "generator" in lines[0], done.stderr
    assert not (tmp_path / "out").exists()
