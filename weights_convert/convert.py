"""From a ``.caffemodel`` (and optionally its deploy prototxt) to a jaxviz model folder.

The architecture of CaffeNet and of the fc6 generator is known, so the prototxt is optional: without
one, the released sizes are assumed; with one, the sizes are read from it (a scaled-down CaffeNet
converts too) and any disagreement with the weights is reported layer by layer.

Nothing is lost and nothing is silent:

- The folder is built whole in a temporary sibling (``.NAME.tmp-PID@HOST``) and moved into place with
  ``jaxviz.io.atomic.replace_dir``; an existing folder is replaced only once the new one is complete, so
  a failure (a full disk, a bad file, SIGKILL) leaves it as it was.
- An existing folder is replaced only when it holds a converted model of the same architecture; any
  other non-empty folder (another architecture, a user's files, a damaged model) is refused with a
  message saying what it holds, unless ``force=True`` (``--force``).
- The card records a sha256 per parameter array (``jaxviz.models.checkpoint``), which ``load`` checks.
- NaN or Inf in a converted blob is an error naming the layer and blob: such weights make every
  activation that reads them NaN, so no visualization of the model can work, and a trained Caffe model
  never holds them unless its file is damaged or its training diverged. ``allow_nonfinite=True``
  (``--allow-nonfinite``) converts anyway, with a warning, and records the count in the card.
"""

from __future__ import annotations

import hashlib
import math
import os
import pathlib
import shutil
from typing import Any, Callable

import numpy as np

from jaxviz.io.atomic import clean_stale, replace_dir, tmp_path
from jaxviz.models import checkpoint
from jaxviz.models.caffenet import CaffeNetConfig, ConvSpec
from jaxviz.models.generator import DECONV_LAYERS, FC_LAYERS, DeconvSpec, GeneratorConfig
from weights_convert.layouts import caffenet_params, generator_params
from weights_convert.caffemodel import read_caffemodel
from weights_convert.finite import check_finite
from weights_convert.errors import (ConversionError, ModelMismatchError, OutputFolderError,
                                     UnsupportedLayerError)
from weights_convert.netspec import (LayerSpec, NetSpec, attach_weights, conv_params, first,
                                     lrn_params, pool_params, repeated)
from weights_convert.prototxt import read_prototxt

CONVERTER_VERSION = 1


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks (real caffemodels are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _require(spec: NetSpec, name: str, layer_type: str) -> LayerSpec:
    layer = spec.layer(name)
    if layer.type != layer_type:
        raise ModelMismatchError(f"expected a {layer_type} layer, found {layer.type}", file=spec.source,
                                 layer=name)
    return layer


def _input_size(spec: NetSpec, default: int) -> tuple[int, int]:
    """(channels, size) of the network's single image input, from input_dim/input_shape/Input layers."""
    shapes = [s for s in spec.inputs.values() if s]
    if not shapes:
        return 3, default
    shape = shapes[0]
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ModelMismatchError(f"expected one square N,C,H,W image input, got {shape}", file=spec.source)
    return int(shape[1]), int(shape[2])


def _fc_width(spec: NetSpec, name: str) -> int:
    width = first(_require(spec, name, "InnerProduct").param("inner_product_param"), "num_output")
    if not isinstance(width, int) or not 1 <= width <= 2 ** 31 - 1:
        raise ModelMismatchError(f"inner_product_param.num_output must be an integer between 1 and 2^31-1, got "
                                 f"{str(width)[:40]}", file=spec.source, layer=name)
    return width


def _plain_conv(spec: NetSpec, name: str, layer_type: str):
    """A convolution without the options CaffeNet and the generator do not have (dilation, no bias)."""
    try:
        p = conv_params(_require(spec, name, layer_type))
    except UnsupportedLayerError as err:
        raise err.located(file=spec.source) from None
    if p.dilation != (1, 1):
        raise ModelMismatchError(f"dilation {p.dilation} is not supported here (the network has none)",
                                 file=spec.source, layer=name)
    if not p.bias_term:
        raise ModelMismatchError("bias_term: false is not supported here (the network has biases)",
                                 file=spec.source, layer=name)
    return p


def caffenet_config_from_spec(spec: NetSpec) -> CaffeNetConfig:
    """The ``CaffeNetConfig`` a CaffeNet-topology prototxt describes (sizes, groups, pooling, LRN)."""
    convs = []
    for i in range(1, 6):
        p = _plain_conv(spec, f"conv{i}", "Convolution")
        if p.kernel[0] != p.kernel[1] or p.stride[0] != p.stride[1] or p.pad[0] != p.pad[1]:
            raise ModelMismatchError("only square kernels, strides and pads are supported by CaffeNet",
                                     file=spec.source, layer=f"conv{i}")
        convs.append(ConvSpec(p.num_output, p.kernel[0], p.stride[0], p.pad[0], p.group))
    try:
        pool = pool_params(_require(spec, "pool1", "Pooling"))
    except UnsupportedLayerError as err:
        raise err.located(file=spec.source) from None
    lrn = lrn_params(_require(spec, "norm1", "LRN"))
    fc = [_fc_width(spec, f"fc{i}") for i in (6, 7, 8)]
    if lrn.local_size < 1 or lrn.local_size % 2 == 0 or not all(map(math.isfinite, (lrn.alpha, lrn.beta, lrn.k))):
        raise ModelMismatchError(f"LRN local_size {lrn.local_size} must be odd and positive and alpha, beta, k "
                                 f"finite (alpha {lrn.alpha}, beta {lrn.beta}, k {lrn.k})", file=spec.source,
                                 layer="norm1")
    channels, size = _input_size(spec, 227)
    try:
        return CaffeNetConfig(input_size=size, in_channels=channels, convs=tuple(convs),
                              pool_kernel=pool.kernel[0], pool_stride=pool.stride[0],
                              lrn_local_size=lrn.local_size, lrn_alpha=lrn.alpha, lrn_beta=lrn.beta,
                              lrn_k=lrn.k, fc=tuple(fc))
    except ValueError as err:
        raise ModelMismatchError(f"not a valid CaffeNet: {err}", file=spec.source) from None


def generator_config_from_spec(spec: NetSpec) -> GeneratorConfig:
    """The ``GeneratorConfig`` an fc6-generator-topology prototxt describes."""
    fc = [_fc_width(spec, n) for n in FC_LAYERS]
    reshape = _require(spec, "reshape", "Reshape")
    dims = [int(d) for d in repeated(first(reshape.param("reshape_param"), "shape"), "dim")]
    if len(dims) != 4:
        raise ModelMismatchError(f"expected a reshape to N,C,H,W, got dims {dims}", file=spec.source,
                                 layer="reshape")
    deconvs = []
    for name in DECONV_LAYERS:
        p = _plain_conv(spec, name, "Deconvolution")
        if p.kernel[0] != p.kernel[1] or p.stride[0] != p.stride[1] or p.pad[0] != p.pad[1]:
            raise ModelMismatchError("only square kernels, strides and pads are supported by the generator",
                                     file=spec.source, layer=name)
        deconvs.append(DeconvSpec(p.num_output, p.kernel[0], p.stride[0], p.pad[0]))
    slopes = {float(first(l.param("relu_param"), "negative_slope", 0.0)) for l in spec.layers if l.type == "ReLU"}
    if len(slopes) > 1:
        raise ModelMismatchError(f"the generator's ReLUs have different slopes {sorted(slopes)}",
                                 file=spec.source)
    shapes = [s for s in spec.inputs.values() if s]
    code_size = int(shapes[0][-1]) if shapes else fc[0]
    h = dims[2]  # the output size follows from the layers
    for d in deconvs:
        h = d.stride * (h - 1) + d.kernel - 2 * d.pad
    default = GeneratorConfig()
    crop = default.crop_size if h == default.output_size else h
    try:
        return GeneratorConfig(code_size=code_size, fc=tuple(fc), reshape=tuple(dims[1:]),
                               deconvs=tuple(deconvs), negative_slope=slopes.pop() if slopes else 0.3,
                               output_size=h, crop_size=crop)
    except ValueError as err:
        raise ModelMismatchError(f"not a valid fc6 generator: {err}", file=spec.source) from None


# architecture -> (config from a prototxt NetSpec, default config factory, params from blobs)
_ARCHITECTURES: dict[str, tuple[Callable, Callable, Callable]] = {
    "caffenet": (caffenet_config_from_spec, CaffeNetConfig, caffenet_params),
    "generator": (generator_config_from_spec, GeneratorConfig, generator_params),
}

ARCHITECTURES = tuple(_ARCHITECTURES)


def check_destination(out_dir: str | os.PathLike, architecture: str, force: bool = False) -> str:
    """What writing a model to ``out_dir`` does: "create", "replace" (a model of the same architecture) or
    "force" (anything else, with ``force``); ``OutputFolderError`` saying how to proceed when refused."""
    out = pathlib.Path(out_dir)
    if out.is_symlink():
        raise OutputFolderError("the output path is a symbolic link; give the folder it points to", file=str(out))
    if not out.exists():
        return "create"
    if not out.is_dir():
        raise OutputFolderError("the output path is a file, not a folder; choose another output folder",
                                file=str(out))
    try:
        entries = sorted(p.name for p in out.iterdir())
    except OSError as err:
        raise OutputFolderError(f"cannot read the output folder: {err.strerror or err}", file=str(out)) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputFolderError("the output folder is not writable; fix its permissions or choose another one",
                                file=str(out))
    if not entries:
        return "create"
    try:
        held: str | None = checkpoint.read_metadata(out).get("architecture")
    except checkpoint.CheckpointError:
        held = None
    extra = [e for e in entries if e not in (checkpoint.PARAMS_DIR, checkpoint.METADATA_FILE)
             and not (e.startswith(".") and (".tmp-" in e or ".old-" in e))]
    if held == architecture and not extra:
        return "replace"
    if force:
        return "force"
    if held == architecture:
        raise OutputFolderError(f"the output folder holds a converted {architecture!r} model and other files "
                                f"({', '.join(extra[:5])}); refusing to replace them. Choose another output "
                                f"folder, or pass --force to replace it all", file=str(out))
    if held is not None:
        raise OutputFolderError(f"the output folder holds a converted {str(held)[:40]!r} model; refusing to "
                                f"replace it with a {architecture!r} one. Choose another output folder, or "
                                f"pass --force to replace it", file=str(out))
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    what = ("a damaged model folder" if (out / checkpoint.METADATA_FILE).exists()
            else f"files that are not a converted model ({shown})")
    raise OutputFolderError(f"the output folder is not empty: it holds {what}; refusing to replace it. Choose "
                            f"another output folder, or pass --force to replace it", file=str(out))


def convert(architecture: str, caffemodel: str | os.PathLike, out_dir: str | os.PathLike,
            prototxt: str | os.PathLike | None = None, *, force: bool = False,
            allow_nonfinite: bool = False) -> pathlib.Path:
    """Convert ``caffemodel`` of a known ``architecture`` into a jaxviz model folder ``out_dir``.

    ``out_dir`` appears whole or not at all. An existing folder is replaced (once the new one is complete)
    only when it holds a model of the same ``architecture``, or with ``force``; otherwise
    ``OutputFolderError``. Non-finite weights are a ``NonFiniteWeightsError`` unless ``allow_nonfinite``.
    """
    if architecture not in _ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(_ARCHITECTURES)}")
    config_from_spec, default_config, params_from_blobs = _ARCHITECTURES[architecture]
    caffemodel = pathlib.Path(caffemodel)
    out = pathlib.Path(out_dir).absolute()
    check_destination(out, architecture, force)  # refused before any reading or writing
    staged = _stage(out)  # proves the place writable before the long part
    try:
        weights = read_caffemodel(caffemodel)
        if prototxt is not None:
            arch = read_prototxt(prototxt)
            config = config_from_spec(arch)
            weights = attach_weights(arch, weights)
        else:
            config = default_config()
        try:
            params = params_from_blobs(weights.blobs_by_layer(), config)
        except ConversionError as err:  # with a prototxt, the two files disagree: name both
            where = str(caffemodel) if prototxt is None else f"{caffemodel} with the prototxt {prototxt}"
            raise err.located(file=where) from None
        nonfinite = check_finite(weights.blobs_by_layer(), list(params), str(caffemodel), allow_nonfinite)
        metadata: dict[str, Any] = {
            "architecture": architecture,
            "config": config.to_dict(),
            "source": {"file": caffemodel.name, "sha256": file_sha256(caffemodel),
                       "bytes": caffemodel.stat().st_size},
            "converter_version": CONVERTER_VERSION,
            # Caffe's ImageNet models take BGR pixels on a 0-255 scale minus the ILSVRC mean image.
            "preprocessing": {"channel_order": "BGR", "pixel_scale": 255, "mean": "image"},
        }
        if prototxt is not None:
            metadata["prototxt"] = {"file": pathlib.Path(prototxt).name, "sha256": file_sha256(prototxt)}
        if nonfinite:
            metadata["nonfinite_weights"] = nonfinite
        try:
            checkpoint.save(staged, params, metadata)
            check_destination(out, architecture, force)  # still what it was when we started
            replace_dir(staged, out)
        except OSError as err:
            raise OutputFolderError(f"cannot write the model: {err.strerror or err}; the output folder was left "
                                    f"as it was", file=str(out)) from None
    finally:
        checkpoint_discard(staged)
    return out


def _stage(out: pathlib.Path) -> pathlib.Path:
    """A new empty temporary sibling of ``out`` (stale ones of dead processes removed first)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(out.parent)
        staged = tmp_path(out)
        checkpoint_discard(staged)
        staged.mkdir()
    except OSError as err:
        raise OutputFolderError(f"cannot create the output folder: {err.strerror or err}", file=str(out)) from None
    return staged


def checkpoint_discard(staged: pathlib.Path) -> None:
    """Remove a temporary folder (no-op once it was moved into place)."""
    if staged.exists():
        shutil.rmtree(staged, ignore_errors=True)
