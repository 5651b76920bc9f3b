"""Deploy prototxts and random Caffe-layout weights for CaffeNet and DeePSiM-generator topologies of any size.

Tests write these as real ``.caffemodel`` files, run them through OpenCV's Caffe importer (the independent
reference) and through jaxviz after conversion, and compare every layer.
"""

from __future__ import annotations

import numpy as np

from jaxviz.models.caffenet import CaffeNetConfig, caffenet_tap_shapes
from jaxviz.models.generator import CONV_LAYERS, DECONV_LAYERS, FC_LAYERS, GeneratorConfig


def _conv(name: str, bottom: str, kind: str, n: int, k: int, s: int, p: int, g: int = 1) -> str:
    group = f"\n    group: {g}" if g != 1 else ""
    return f"""layer {{
  name: "{name}"
  type: "{kind}"
  bottom: "{bottom}"
  top: "{name}"
  convolution_param {{
    num_output: {n}
    kernel_size: {k}
    stride: {s}
    pad: {p}{group}
  }}
}}
"""


def _relu(name: str, blob: str, slope: float = 0.0) -> str:
    param = f"\n  relu_param {{\n    negative_slope: {slope}\n  }}" if slope else ""
    return f'layer {{\n  name: "{name}"\n  type: "ReLU"\n  bottom: "{blob}"\n  top: "{blob}"{param}\n}}\n'


def _ip(name: str, bottom: str, n: int) -> str:
    return (f'layer {{\n  name: "{name}"\n  type: "InnerProduct"\n  bottom: "{bottom}"\n  top: "{name}"\n'
            f"  inner_product_param {{\n    num_output: {n}\n  }}\n}}\n")


def caffenet_prototxt(cfg: CaffeNetConfig) -> str:
    """A deploy prototxt of CaffeNet's topology with ``cfg``'s sizes (V2 text format)."""
    text = (f'name: "CaffeNet"\ninput: "data"\ninput_shape {{\n  dim: 1\n  dim: {cfg.in_channels}\n'
            f"  dim: {cfg.input_size}\n  dim: {cfg.input_size}\n}}\n")
    bottom = "data"
    for i, c in enumerate(cfg.convs, 1):
        text += _conv(f"conv{i}", bottom, "Convolution", c.features, c.kernel, c.stride, c.pad, c.group)
        text += _relu(f"relu{i}", f"conv{i}")
        bottom = f"conv{i}"
        if i in (1, 2, 5):
            text += (f'layer {{\n  name: "pool{i}"\n  type: "Pooling"\n  bottom: "conv{i}"\n  top: "pool{i}"\n'
                     f"  pooling_param {{\n    pool: MAX\n    kernel_size: {cfg.pool_kernel}\n"
                     f"    stride: {cfg.pool_stride}\n  }}\n}}\n")
            bottom = f"pool{i}"
        if i in (1, 2):
            text += (f'layer {{\n  name: "norm{i}"\n  type: "LRN"\n  bottom: "pool{i}"\n  top: "norm{i}"\n'
                     f"  lrn_param {{\n    local_size: {cfg.lrn_local_size}\n    alpha: {cfg.lrn_alpha!r}\n"
                     f"    beta: {cfg.lrn_beta!r}\n  }}\n}}\n")
            bottom = f"norm{i}"
    for i, width in zip((6, 7, 8), cfg.fc):
        text += _ip(f"fc{i}", bottom, width)
        if i != 8:
            text += _relu(f"relu{i}", f"fc{i}")
            text += (f'layer {{\n  name: "drop{i}"\n  type: "Dropout"\n  bottom: "fc{i}"\n  top: "fc{i}"\n'
                     f"  dropout_param {{\n    dropout_ratio: 0.5\n  }}\n}}\n")
        bottom = f"fc{i}"
    text += 'layer {\n  name: "prob"\n  type: "Softmax"\n  bottom: "fc8"\n  top: "prob"\n}\n'
    return text


def generator_prototxt(cfg: GeneratorConfig) -> str:
    """A deploy prototxt of a DeePSiM generator's topology with ``cfg``'s sizes (V2 text format)."""
    c, h, w = cfg.reshape
    if cfg.fc:
        text = f'name: "generator"\ninput: "feat"\ninput_shape {{\n  dim: 1\n  dim: {cfg.code_size}\n}}\n'
        bottom = "feat"
        for name, width in zip(FC_LAYERS, cfg.fc):
            text += _ip(name, bottom, width) + _relu(f"relu_{name}", name, cfg.negative_slope)
            bottom = name
        text += (f'layer {{\n  name: "reshape"\n  type: "Reshape"\n  bottom: "defc5"\n  top: "reshape_defc5"\n'
                 f"  reshape_param {{\n    shape {{\n      dim: 0\n      dim: {c}\n      dim: {h}\n"
                 f"      dim: {w}\n    }}\n  }}\n}}\n")
        bottom = "reshape_defc5"
    else:  # a map code (the pool5 generator's input)
        text = (f'name: "generator"\ninput: "feat"\ninput_shape {{\n  dim: 1\n  dim: {c}\n  dim: {h}\n'
                f"  dim: {w}\n}}\n")
        bottom = "feat"
    for name, d in zip(CONV_LAYERS, cfg.convs):
        text += _conv(name, bottom, "Convolution", d.features, d.kernel, d.stride, d.pad)
        text += _relu(f"R{name[1:].replace('conv', 'relu')}", name, cfg.negative_slope)
        bottom = name
    for name, d in zip(DECONV_LAYERS, cfg.deconvs):
        text += _conv(name, bottom, "Deconvolution", d.features, d.kernel, d.stride, d.pad)
        if name != DECONV_LAYERS[-1]:
            text += _relu(f"relu_{name}", name, cfg.negative_slope)
        bottom = name
    return text


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    # He scaling keeps activations of a deep random net in a range where relative errors are meaningful.
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def caffenet_blobs(cfg: CaffeNetConfig, seed: int = 0) -> dict[str, tuple[np.ndarray, ...]]:
    """Random weights in Caffe's layouts ([O, I/g, kh, kw], [out, in], biases) for every CaffeNet layer."""
    rng = np.random.default_rng(seed)
    blobs: dict[str, tuple[np.ndarray, ...]] = {}
    c_in = cfg.in_channels
    for i, c in enumerate(cfg.convs, 1):
        fan_in = c_in // c.group * c.kernel ** 2
        blobs[f"conv{i}"] = (_he(rng, (c.features, c_in // c.group, c.kernel, c.kernel), fan_in),
                             0.1 * rng.standard_normal(c.features).astype(np.float32))
        c_in = c.features
    n_in = int(np.prod(caffenet_tap_shapes(cfg)["pool5"]))
    for i, width in zip((6, 7, 8), cfg.fc):
        blobs[f"fc{i}"] = (_he(rng, (width, n_in), n_in), 0.1 * rng.standard_normal(width).astype(np.float32))
        n_in = width
    return blobs


def generator_blobs(cfg: GeneratorConfig, seed: int = 0) -> dict[str, tuple[np.ndarray, ...]]:
    """Random weights in Caffe's layouts (convolution [O, I, kh, kw], deconvolution [I, O, kh, kw])."""
    rng = np.random.default_rng(seed)
    blobs: dict[str, tuple[np.ndarray, ...]] = {}
    n_in = cfg.code_size
    for name, width in zip(FC_LAYERS, cfg.fc):
        blobs[name] = (_he(rng, (width, n_in), n_in), 0.1 * rng.standard_normal(width).astype(np.float32))
        n_in = width
    c_in = cfg.reshape[0]
    for name, d in zip(CONV_LAYERS, cfg.convs):
        blobs[name] = (_he(rng, (d.features, c_in, d.kernel, d.kernel), c_in * d.kernel ** 2),
                       0.1 * rng.standard_normal(d.features).astype(np.float32))
        c_in = d.features
    for name, d in zip(DECONV_LAYERS, cfg.deconvs):
        fan_in = c_in * d.kernel ** 2 // d.stride ** 2
        blobs[name] = (_he(rng, (c_in, d.features, d.kernel, d.kernel), fan_in),
                       0.1 * rng.standard_normal(d.features).astype(np.float32))
        c_in = d.features
    return blobs
