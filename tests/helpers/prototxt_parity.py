"""Prototxt-built networks against OpenCV's Caffe importer, layer by layer, and random Caffe-layout blobs."""

from __future__ import annotations

import dataclasses
import os

import cv2
import numpy as np

from weights_convert.netspec import NetSpec
from weights_convert.network.graph import PrototxtNet


def opencv_outputs(prototxt: str | os.PathLike, caffemodel: str | os.PathLike, x_nchw: np.ndarray,
                   names: list[str] | None = None) -> dict[str, np.ndarray]:
    """OpenCV's output of every (or each named) layer, keyed by layer name, unfused."""
    net = cv2.dnn.readNetFromCaffe(os.fspath(prototxt), os.fspath(caffemodel))
    net.enableFusion(False)  # a fused conv+ReLU would report the rectified value as the conv's output
    net.setInput(np.ascontiguousarray(x_nchw, np.float32))
    names = list(net.getLayerNames()) if names is None else names
    return dict(zip(names, net.forward(names)))


def relative_errors(net: PrototxtNet, params, x_nchw: np.ndarray, reference: dict[str, np.ndarray],
                    layer_names: list[str] | None = None) -> dict[str, float]:
    """max |ours - OpenCV| / max |OpenCV| for each layer that has a tap (all of ``reference`` by default)."""
    layer_taps = net.layer_taps()
    names = [n for n in (layer_names or reference) if n in layer_taps]
    x = x_nchw.transpose(0, 2, 3, 1) if x_nchw.ndim == 4 else x_nchw
    ours = net.apply(params, x, taps=tuple(layer_taps[n] for n in names))
    errors = {}
    for name in names:
        got = np.asarray(ours[layer_taps[name]])
        got = got.transpose(0, 3, 1, 2) if got.ndim == 4 else got  # back to Caffe order
        ref = reference[name]
        assert got.shape == ref.shape, f"{name}: shape {got.shape} vs OpenCV {ref.shape}"
        errors[name] = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))
    return errors


def random_blobs(net: PrototxtNet, seed: int = 0) -> dict[str, tuple[np.ndarray, ...]]:
    """He-scaled random weights in Caffe's blob layouts for every parametrized layer of ``net``."""
    rng = np.random.default_rng(seed)
    blobs: dict[str, tuple[np.ndarray, ...]] = {}
    for step in net.steps:
        shapes = step.param_shapes
        if not shapes:
            continue
        if step.type == "PReLU":
            blobs[step.name] = (rng.uniform(0.05, 0.5, shapes["slope"]).astype(np.float32),)
            continue
        kernel = shapes["kernel"]
        if step.type == "InnerProduct":
            n_in, n_out = kernel
            caffe, fan_in = (n_out, n_in), n_in
        else:
            kh, kw, cin_g, c_out = kernel
            fan_in = cin_g * kh * kw
            group = step.bottom_shapes[0][-1] // cin_g
            # Deconvolution blobs are [C_in, C_out / group, kh, kw], convolution ones [C_out, C_in / group, ..].
            caffe = ((cin_g * group, c_out // group, kh, kw) if step.type == "Deconvolution"
                     else (c_out, cin_g, kh, kw))
        w = (rng.standard_normal(caffe) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        blobs[step.name] = (w,) + ((0.1 * rng.standard_normal(shapes["bias"]).astype(np.float32),)
                                   if "bias" in shapes else ())
    return blobs


def with_blobs(spec: NetSpec, blobs: dict[str, tuple[np.ndarray, ...]]) -> NetSpec:
    """``spec`` with ``blobs`` attached by layer name."""
    return dataclasses.replace(spec, layers=tuple(dataclasses.replace(l, blobs=blobs.get(l.name, ()))
                                                  for l in spec.layers))
