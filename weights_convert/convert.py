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

import dataclasses
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
from jaxviz.models.generator import CODE_LAYERS, CONV_LAYERS, DECONV_LAYERS, FC_LAYERS, DeconvSpec, GeneratorConfig
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


def _square_spec(spec: NetSpec, name: str, layer_type: str) -> DeconvSpec:
    p = _plain_conv(spec, name, layer_type)
    if p.kernel[0] != p.kernel[1] or p.stride[0] != p.stride[1] or p.pad[0] != p.pad[1]:
        raise ModelMismatchError("only square kernels, strides and pads are supported by the generator",
                                 file=spec.source, layer=name)
    if p.group != 1:
        raise ModelMismatchError(f"group {p.group} is not supported by the generator (its layers have none)",
                                 file=spec.source, layer=name)
    return DeconvSpec(p.num_output, p.kernel[0], p.stride[0], p.pad[0])


def default_code_layer(config: GeneratorConfig) -> str:
    """The code layer a generator's shape implies: pool5 for a map code, fc8 for 1000 units, else fc6.

    The fc7 generator has the fc6 one's architecture, so only its user can say it (``code_layer="fc7"``).
    """
    return "pool5" if config.code_is_map else "fc8" if config.code_size == 1000 else "fc6"


def _with_code_layer(config: GeneratorConfig, code_layer: str | None, source: str | None = None) -> GeneratorConfig:
    if code_layer is not None and code_layer not in CODE_LAYERS:
        raise ModelMismatchError(f"code layer {code_layer!r} is not one of CaffeNet's generator code layers "
                                 f"({', '.join(CODE_LAYERS)})", file=source)
    return dataclasses.replace(config, code_layer=code_layer or default_code_layer(config))


def generator_config_from_spec(spec: NetSpec, code_layer: str | None = None) -> GeneratorConfig:
    """The ``GeneratorConfig`` a DeePSiM-generator prototxt describes (fc6/fc7/fc8 or pool5 topology)."""
    names = {l.name for l in spec.layers}
    has_fc = "defc7" in names
    fc = [_fc_width(spec, n) for n in FC_LAYERS] if has_fc else []
    shapes = [s for s in spec.inputs.values() if s]
    if has_fc:
        reshape = _require(spec, "reshape", "Reshape")
        dims = [int(d) for d in repeated(first(reshape.param("reshape_param"), "shape"), "dim")]
        if len(dims) != 4:
            raise ModelMismatchError(f"expected a reshape to N,C,H,W, got dims {dims}", file=spec.source,
                                     layer="reshape")
        chw = dims[1:]
        code_size = int(shapes[0][-1]) if shapes else fc[0]
    else:  # a map code: the input blob is N, C, H, W (pool5's 1x256x6x6)
        if not shapes or len(shapes[0]) != 4:
            raise ModelMismatchError("a generator without defc7 reads a map code, so it needs an N,C,H,W input "
                                     f"shape; got {shapes[0] if shapes else 'none'}", file=spec.source)
        chw = [int(d) for d in shapes[0][1:]]
        code_size = math.prod(chw)
    convs = [_square_spec(spec, n, "Convolution") for n in CONV_LAYERS if n in names]
    deconvs = [_square_spec(spec, n, "Deconvolution") for n in DECONV_LAYERS]
    slopes = {float(first(l.param("relu_param"), "negative_slope", 0.0)) for l in spec.layers if l.type == "ReLU"}
    if len(slopes) > 1:
        raise ModelMismatchError(f"the generator's ReLUs have different slopes {sorted(slopes)}",
                                 file=spec.source)
    h = chw[1]  # the output size follows from the layers
    for d in convs:
        h = (h + 2 * d.pad - d.kernel) // d.stride + 1
    for d in deconvs:
        h = d.stride * (h - 1) + d.kernel - 2 * d.pad
    default = GeneratorConfig()
    crop = default.crop_size if h == default.output_size else h
    try:
        config = GeneratorConfig(code_size=code_size, fc=tuple(fc), reshape=tuple(chw), convs=tuple(convs),
                                 deconvs=tuple(deconvs), negative_slope=slopes.pop() if slopes else 0.3,
                                 output_size=h, crop_size=crop)
    except ValueError as err:
        raise ModelMismatchError(f"not a valid DeePSiM generator: {err}", file=spec.source) from None
    return _with_code_layer(config, code_layer, spec.source)


def generator_config_from_blobs(blobs: dict[str, tuple[np.ndarray, ...]],
                                code_layer: str | None = None) -> GeneratorConfig:
    """The released generator whose layers the weights hold, without a prototxt.

    ``Rconv6`` weights mean the pool5 generator; a defc7 reading 1000 inputs the fc8 one; otherwise the
    fc6 one (or fc7, the same architecture, with ``code_layer="fc7"``).
    """
    if len(blobs.get("Rconv6", ())):
        config = GeneratorConfig.released("pool5")
    elif len(blobs.get("defc7", ())) and np.asarray(blobs["defc7"][0]).shape[-1] == 1000:
        config = GeneratorConfig.released("fc8")
    else:
        config = GeneratorConfig()
    if code_layer is not None and code_layer != config.code_layer and \
            {code_layer, config.code_layer} != {"fc6", "fc7"}:
        raise ModelMismatchError(f"the weights are those of the {config.code_layer} generator, not of the "
                                 f"{code_layer} one (code layer given)")
    return _with_code_layer(config, code_layer)


# architecture -> (config from a prototxt NetSpec, default config factory, params from blobs)
# (the generator's two take the code layer, which only its user can tell for fc7)
_ARCHITECTURES: dict[str, tuple[Callable, Callable, Callable]] = {
    "caffenet": (lambda spec, code_layer=None: caffenet_config_from_spec(spec),
                 lambda blobs, code_layer=None: CaffeNetConfig(), caffenet_params),
    "generator": (generator_config_from_spec, generator_config_from_blobs, generator_params),
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
            allow_nonfinite: bool = False, code_layer: str | None = None) -> pathlib.Path:
    """Convert ``caffemodel`` of a known ``architecture`` into a jaxviz model folder ``out_dir``.

    ``out_dir`` appears whole or not at all. An existing folder is replaced (once the new one is complete)
    only when it holds a model of the same ``architecture``, or with ``force``; otherwise
    ``OutputFolderError``. Non-finite weights are a ``NonFiniteWeightsError`` unless ``allow_nonfinite``.
    ``code_layer`` (generators only): the CaffeNet layer its codes are (fc6, fc7, fc8, pool5); by default
    the one its shape implies (``default_code_layer``), so only the fc7 generator needs it said.
    """
    if architecture not in _ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(_ARCHITECTURES)}")
    if code_layer is not None and architecture != "generator":
        raise ValueError(f"code_layer is for generators; a {architecture} has no code layer")
    if code_layer is not None and code_layer not in CODE_LAYERS:
        raise ValueError(f"code layer {code_layer!r} is not one of {', '.join(CODE_LAYERS)}")
    config_from_spec, default_config, params_from_blobs = _ARCHITECTURES[architecture]
    caffemodel = pathlib.Path(caffemodel)
    out = pathlib.Path(out_dir).absolute()
    check_destination(out, architecture, force)  # refused before any reading or writing
    staged = _stage(out)  # proves the place writable before the long part
    try:
        weights = read_caffemodel(caffemodel)
        if prototxt is not None:
            arch = read_prototxt(prototxt)
            config = config_from_spec(arch, code_layer=code_layer)
            weights = attach_weights(arch, weights)
        else:
            try:
                config = default_config(weights.blobs_by_layer(), code_layer=code_layer)
            except ConversionError as err:
                raise err.located(file=str(caffemodel)) from None
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
