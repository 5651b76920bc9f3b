"""Every layer of CaffeNet and of the DeePSiM generators equals OpenCV's Caffe importer (the independent reference).

The test writes a prototxt and a random-weight ``.caffemodel`` itself (V1 and V2 encodings, packed and
unpacked floats, legacy 4-D blob shapes), runs OpenCV on them, converts them with ``weights_convert``,
loads the result with ``jaxviz.models.load`` and compares all layer outputs.
"""

from __future__ import annotations

import dataclasses
import pathlib

import cv2
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz.models as jm
from jaxviz.models.caffenet import CaffeNetConfig, ConvSpec
from jaxviz.models.generator import DeconvSpec, GeneratorConfig
from tests.helpers.caffe_nets import caffenet_blobs, caffenet_prototxt, generator_blobs, generator_prototxt
from weights_convert.caffemodel import write_caffemodel
from weights_convert.convert import convert
from weights_convert.netspec import NetSpec
from weights_convert.prototxt import parse_prototxt

MAX_REL_ERR = 1e-4

# Small versions of both topologies: every layer type, groups, ceil pooling with a 2x2 pool5 (so the
# fc6 C,H,W -> H,W,C reorder matters), a non-square reshape-free generator ending in 32x32 cropped to 27.
SMALL_CAFFENET = CaffeNetConfig(
    input_size=99, in_channels=3,
    convs=(ConvSpec(24, 11, 4, 0, 1), ConvSpec(32, 5, 1, 2, 2), ConvSpec(48, 3, 1, 1, 1),
           ConvSpec(48, 3, 1, 1, 2), ConvSpec(32, 3, 1, 1, 2)),
    fc=(64, 48, 10))
SMALL_GENERATOR = GeneratorConfig(
    code_size=64, fc=(96, 96, 128), reshape=(8, 4, 4),
    deconvs=(DeconvSpec(16, 4, 2, 1), DeconvSpec(24, 3, 1, 1), DeconvSpec(16, 4, 2, 1), DeconvSpec(16, 3, 1, 1),
             DeconvSpec(8, 4, 2, 1), DeconvSpec(8, 3, 1, 1), DeconvSpec(8, 3, 1, 1), DeconvSpec(4, 3, 1, 1),
             DeconvSpec(3, 3, 1, 1)),
    output_size=32, crop_size=27)

# The pool5 generator's topology at small size: a 6x6 map code, three convolutions (the last unpadded),
# then the deconvolutions.
SMALL_POOL5_GENERATOR = GeneratorConfig(
    code_size=8 * 6 * 6, fc=(), reshape=(8, 6, 6),
    convs=(DeconvSpec(16, 3, 1, 1), DeconvSpec(16, 3, 1, 1), DeconvSpec(16, 3, 1, 0)),
    deconvs=SMALL_GENERATOR.deconvs, output_size=32, crop_size=27, code_layer="pool5")

ENCODINGS = {
    "v2-packed": dict(v1=False, packed=True),
    "v2-unpacked": dict(v1=False, packed=False),
    "v1-legacy-shapes": dict(v1=True, legacy_shape=True),
    "v2-double": dict(v1=False, double=True),
}


def opencv_layer_taps(spec: NetSpec) -> dict[str, str]:
    """OpenCV layer name -> jaxviz tap: a layer's own output is ``blob:pre`` when an in-place layer follows."""
    taps: dict[str, str] = {}
    for i, layer in enumerate(spec.layers):
        if layer.type in ("Dropout", "Input"):
            continue
        top = layer.tops[0]
        in_place = layer.bottoms and layer.bottoms[0] == top
        rewritten_later = any(l.bottoms and l.tops and l.bottoms[0] == l.tops[0] == top and l.type != "Dropout"
                              for l in spec.layers[i + 1:])
        taps[layer.name] = f"{top}:pre" if (not in_place and rewritten_later) else top
    return taps


def with_blobs(arch: NetSpec, blobs: dict[str, tuple[np.ndarray, ...]]) -> NetSpec:
    """The architecture with random weights attached to its parametrized layers."""
    layers = tuple(dataclasses.replace(l, blobs=blobs.get(l.name, ())) for l in arch.layers)
    return dataclasses.replace(arch, layers=layers)


def run_parity(tmp_path: pathlib.Path, architecture: str, prototxt_text: str, blobs, x_nchw: np.ndarray,
               encoding: dict, with_prototxt: bool = True, **convert_options) -> dict[str, float]:
    """Relative error (max |ours - ref| / max |ref|) of every layer output, keyed by OpenCV layer name."""
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(prototxt_text)
    arch = parse_prototxt(prototxt_text, str(proto))
    spec = with_blobs(arch, blobs)
    model_file = tmp_path / "weights.caffemodel"
    write_caffemodel(model_file, spec, **encoding)
    reference_file = model_file
    if encoding.get("double"):
        # OpenCV cannot read double_data blobs: its reference runs on the same weights stored as floats.
        reference_file = tmp_path / "weights-float.caffemodel"
        write_caffemodel(reference_file, spec, v1=encoding.get("v1", False))

    net = cv2.dnn.readNetFromCaffe(str(proto), str(reference_file))
    net.setInput(x_nchw)
    names = list(net.getLayerNames())
    reference = dict(zip(names, net.forward(names)))

    convert(architecture, model_file, tmp_path / "converted", proto if with_prototxt else None, **convert_options)
    model = jm.load(architecture, tmp_path / "converted")
    taps = opencv_layer_taps(arch)
    x = x_nchw.transpose(0, 2, 3, 1) if x_nchw.ndim == 4 else x_nchw
    if architecture == "generator":
        x = x.reshape(x.shape[0], -1)  # a map code goes in flat, H, W, C order
    ours = model(jnp.asarray(x), taps=tuple(taps.values()))
    errors = {}
    for name, tap in taps.items():
        ref = reference[name]
        ref = ref.transpose(0, 2, 3, 1) if ref.ndim == 4 else ref
        got = np.asarray(ours[tap])
        assert got.shape == ref.shape, f"{name} ({tap}): shape {got.shape} vs OpenCV {ref.shape}"
        errors[name] = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert set(errors) >= {n for n in names if not n.startswith("drop")}, "a layer was not compared"
    return errors


def _image(cfg: CaffeNetConfig, seed: int = 1) -> np.ndarray:
    # Caffe-space inputs: mean-subtracted pixels spread over roughly +-100.
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 50.0, (2, cfg.in_channels, cfg.input_size, cfg.input_size)).astype(np.float32)


def _code(cfg: GeneratorConfig, seed: int = 1) -> np.ndarray:
    """Two non-negative codes (post-ReLU activations), N, C, H, W for a map code as OpenCV takes it."""
    rng = np.random.default_rng(seed)
    code = np.maximum(rng.normal(0.0, 2.0, (2, cfg.code_size)), 0.0).astype(np.float32)
    return code.reshape(2, *cfg.reshape) if cfg.code_is_map else code


@pytest.mark.parametrize("encoding", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_small_caffenet_every_layer_equals_opencv(tmp_path, encoding):
    errors = run_parity(tmp_path, "caffenet", caffenet_prototxt(SMALL_CAFFENET), caffenet_blobs(SMALL_CAFFENET),
                        _image(SMALL_CAFFENET), encoding)
    assert max(errors.values()) <= MAX_REL_ERR, errors


# V1 files predate the Reshape layer the generator needs: its encodings are V2 ones, legacy shapes included.
GENERATOR_ENCODINGS = {**{k: v for k, v in ENCODINGS.items() if not v.get("v1")},
                       "v2-legacy-shapes": dict(v1=False, legacy_shape=True)}


@pytest.mark.parametrize("encoding", GENERATOR_ENCODINGS.values(), ids=GENERATOR_ENCODINGS.keys())
def test_small_generator_every_layer_equals_opencv(tmp_path, encoding):
    errors = run_parity(tmp_path, "generator", generator_prototxt(SMALL_GENERATOR),
                        generator_blobs(SMALL_GENERATOR), _code(SMALL_GENERATOR), encoding)
    assert max(errors.values()) <= MAX_REL_ERR, errors


@pytest.mark.parametrize("encoding", ["v2-packed", "v2-legacy-shapes"])
def test_small_pool5_generator_every_layer_equals_opencv(tmp_path, encoding):
    errors = run_parity(tmp_path, "generator", generator_prototxt(SMALL_POOL5_GENERATOR),
                        generator_blobs(SMALL_POOL5_GENERATOR), _code(SMALL_POOL5_GENERATOR),
                        GENERATOR_ENCODINGS[encoding])
    assert {"Rconv6", "Rconv7", "Rconv8"} <= set(errors)
    assert max(errors.values()) <= MAX_REL_ERR, errors


@pytest.mark.slow
@pytest.mark.parametrize("v1", [False, True], ids=["v2", "v1"])
def test_full_caffenet_every_layer_equals_opencv_without_prototxt(tmp_path, v1):
    cfg = CaffeNetConfig()
    errors = run_parity(tmp_path, "caffenet", caffenet_prototxt(cfg), caffenet_blobs(cfg), _image(cfg)[:1],
                        dict(v1=v1, legacy_shape=v1), with_prototxt=False)
    assert max(errors.values()) <= MAX_REL_ERR, errors


@pytest.mark.slow
def test_full_generator_every_layer_equals_opencv_without_prototxt(tmp_path):
    cfg = GeneratorConfig()
    errors = run_parity(tmp_path, "generator", generator_prototxt(cfg), generator_blobs(cfg), _code(cfg)[:1],
                        dict(v1=False, legacy_shape=True), with_prototxt=False)
    assert max(errors.values()) <= MAX_REL_ERR, errors


@pytest.mark.slow
@pytest.mark.parametrize("code_layer", ["fc7", "fc8", "pool5"])
def test_released_generators_every_layer_equals_opencv_without_prototxt(tmp_path, code_layer):
    """The other released generators at full size: the converter tells them from their weights alone."""
    cfg = GeneratorConfig.released(code_layer)
    errors = run_parity(tmp_path, "generator", generator_prototxt(cfg), generator_blobs(cfg), _code(cfg)[:1],
                        dict(v1=False, legacy_shape=True), with_prototxt=False,
                        code_layer="fc7" if code_layer == "fc7" else None)
    assert max(errors.values()) <= MAX_REL_ERR, errors
    card = jm.load("generator", tmp_path / "converted").config
    assert card == cfg, "the converted generator is not the released one"


def test_released_prototxts_give_the_default_configs(shared_data):
    """The DGN-AM release's own prototxts describe exactly the default CaffeNet and generator."""
    from weights_convert.convert import caffenet_config_from_spec, generator_config_from_spec
    from weights_convert.prototxt import read_prototxt

    assert caffenet_config_from_spec(read_prototxt(shared_data("dgn-am", "nets", "caffenet",
                                                               "caffenet.prototxt"))) == CaffeNetConfig()
    assert generator_config_from_spec(read_prototxt(shared_data("dgn-am", "nets", "upconv", "fc6",
                                                                "generator.prototxt"))) == GeneratorConfig()
