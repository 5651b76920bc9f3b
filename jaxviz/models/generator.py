"""The DeePSiM image generators (Dosovitskiy & Brox 2016, used by DGN-AM/PPGN) as one explicit Flax module.

A generator maps a code (the activations of one CaffeNet layer, ``GeneratorConfig.code_layer``) to an
image NHWC already in CaffeNet input space (BGR, 0-255 scale, mean subtracted). The DeePSiM release has
one generator per code layer, all built from the same pieces (``GeneratorConfig.released``):

- ``fc6`` (the one DGN-AM uses) and ``fc7``: 4096 -> defc7, defc6, defc5 (4096 each, leaky ReLU 0.3)
  -> reshape to 256x4x4 -> nine deconvolutions to 3x256x256. The two differ only in their weights.
- ``fc8``: the same with a 1000-wide input to defc7.
- ``pool5``: the 256x6x6 map itself (no fc layers): three convolutions ``Rconv6`` (512, 3x3, pad 1),
  ``Rconv7`` (512, 3x3, pad 1), ``Rconv8`` (512, 3x3, no pad: 6 -> 4), then the same nine
  deconvolutions (``deconv5`` reads 512 channels instead of 256).

The layer tables are those of the DeePSiM release's ``generator.prototxt`` files (``release_deepsim_v0``,
one folder per code layer; the fc6 one ships with DGN-AM's code, ``nets/upconv/fc6``), as also written
out layer by layer in the PyTorch port of these generators that Lucent-style libraries load
(``upconvGAN``: ``build_fc6``/``fc7``/``fc8``/``pool5``).

Codes are flat ``(N, code_size)`` for every generator, so one optimizer, one clipping rule and one set
of bounds serve them all. A map code (pool5) is flattened in H, W, C order, i.e. jaxviz's NHWC pool5
tap ``.reshape(N, -1)``; Caffe's C, H, W order is ``chw_code_to_hwc``'s input.

Taps are named like the Caffe blobs:

- ``"defc7"``, ``"defc6"``, ``"defc5"``, ``"Rconv6"``..``"Rconv8"`` and every deconvolution but the last:
  after the in-place leaky ReLU (slope 0.3); ``"<name>:pre"`` is the value before it;
- ``"reshape_defc5"`` (fc generators): the 4x4 map, NHWC (N, 4, 4, 256);
- ``"deconv0"``: the linear output image, NHWC (N, 256, 256, 3).

Reshape layout: Caffe reshapes defc5's 4096 outputs in C, H, W order. Here the module reshapes straight
to NHWC (N, H, W, C); the C,H,W -> H,W,C permutation is folded into defc5's kernel columns and bias by
``weights_convert.layouts.generator_defc5_params``, so converted weights give exactly Caffe's map.
The ``"defc5"``/``"defc5:pre"`` taps are permuted back to Caffe's C, H, W unit order, so unit ``i`` of
those taps is unit ``i`` of Caffe's blob, like every other tap.
``conv5_1``/``conv4_1``/``conv3_1`` are Deconvolution layers despite their names (as in the prototxt).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax

from jaxviz.models import layers
from jaxviz.models._taps import AllTapsComputed, TapRecorder
from jaxviz.models.modules import CaffeConv, CaffeDeconv, CaffeDense

FC_LAYERS = ("defc7", "defc6", "defc5")
CONV_LAYERS = ("Rconv6", "Rconv7", "Rconv8")   # the pool5 generator's convolutions on its input map
DECONV_LAYERS = ("deconv5", "conv5_1", "deconv4", "conv4_1", "deconv3", "conv3_1",
                 "deconv2", "deconv1", "deconv0")


class DeconvSpec(NamedTuple):
    """One generator (De)convolution layer: output channels, square kernel, stride, padding."""

    features: int
    kernel: int
    stride: int = 1
    pad: int = 0


CODE_LAYERS = ("fc6", "fc7", "fc8", "pool5")  # the code layers of the released generators

_POOL5_CONVS = (DeconvSpec(512, 3, 1, 1), DeconvSpec(512, 3, 1, 1), DeconvSpec(512, 3, 1, 0))


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Generator sizes; the defaults are the released DeePSiM fc6 generator (4096 code -> 3x256x256)."""

    code_size: int = 4096
    fc: tuple[int, ...] = (4096, 4096, 4096)        # defc7, defc6, defc5; () for a map code (pool5)
    reshape: tuple[int, int, int] = (256, 4, 4)     # C, H, W of the first map: defc5's Reshape, or the code's
    convs: tuple[DeconvSpec, ...] = ()              # Rconv6.. Convolution layers on that map (pool5: three)
    deconvs: tuple[DeconvSpec, ...] = (            # in DECONV_LAYERS order
        DeconvSpec(256, 4, 2, 1),   # deconv5
        DeconvSpec(512, 3, 1, 1),   # conv5_1
        DeconvSpec(256, 4, 2, 1),   # deconv4
        DeconvSpec(256, 3, 1, 1),   # conv4_1
        DeconvSpec(128, 4, 2, 1),   # deconv3
        DeconvSpec(128, 3, 1, 1),   # conv3_1
        DeconvSpec(64, 4, 2, 1),    # deconv2
        DeconvSpec(32, 4, 2, 1),    # deconv1
        DeconvSpec(3, 4, 2, 1),     # deconv0 (linear)
    )
    negative_slope: float = 0.3
    output_size: int = 256
    crop_size: int = 227            # the classifier's input size; the crop is centred
    code_layer: str = "fc6"         # the classifier layer whose activations are the codes (bounds, encoder)

    def __post_init__(self):
        object.__setattr__(self, "fc", tuple(int(w) for w in self.fc))
        object.__setattr__(self, "reshape", tuple(int(s) for s in self.reshape))
        object.__setattr__(self, "convs", tuple(DeconvSpec(*map(int, d)) for d in self.convs))
        object.__setattr__(self, "deconvs", tuple(DeconvSpec(*map(int, d)) for d in self.deconvs))
        if len(self.fc) not in (0, len(FC_LAYERS)):
            raise ValueError(f"GeneratorConfig: needs {len(FC_LAYERS)} fc widths {FC_LAYERS} (or none, for a "
                             f"map code), got {self.fc}")
        if len(self.convs) > len(CONV_LAYERS):
            raise ValueError(f"GeneratorConfig: at most {len(CONV_LAYERS)} convolutions {CONV_LAYERS}, "
                             f"got {len(self.convs)}")
        if len(self.deconvs) != len(DECONV_LAYERS):
            raise ValueError(f"GeneratorConfig: needs {len(DECONV_LAYERS)} deconv specs {DECONV_LAYERS}, "
                             f"got {len(self.deconvs)}")
        held, what = (self.fc[-1], "outputs of defc5") if self.fc else (self.code_size, "code units")
        if len(self.reshape) != 3 or math.prod(self.reshape) != held:
            raise ValueError(f"GeneratorConfig: reshape {self.reshape} (C, H, W) does not hold the "
                             f"{held} {what}")
        if not isinstance(self.code_layer, str) or not self.code_layer:
            raise ValueError(f"GeneratorConfig: code_layer must name a classifier layer, got {self.code_layer!r}")
        size = generator_tap_shapes(self)["deconv0"][0]
        if size != self.output_size:
            raise ValueError(f"GeneratorConfig: the layers produce {size}x{size} images, "
                             f"output_size says {self.output_size}")
        if not 0 < self.crop_size <= self.output_size:
            raise ValueError(f"GeneratorConfig: crop_size {self.crop_size} does not fit in "
                             f"output_size {self.output_size}")

    @property
    def crop_offset(self) -> int:
        """Top/left offset of the centred classifier crop (14 for 227 out of 256)."""
        return (self.output_size - self.crop_size) // 2

    @property
    def out_channels(self) -> int:
        """Channels of the output image."""
        return self.deconvs[-1].features

    @property
    def code_is_map(self) -> bool:
        """Whether the code is a feature map (pool5) rather than a vector read by fc layers."""
        return not self.fc

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for checkpoint metadata)."""
        d = dataclasses.asdict(self)
        d["fc"], d["reshape"] = list(self.fc), list(self.reshape)
        d["convs"] = [list(s) for s in self.convs]
        d["deconvs"] = [list(s) for s in self.deconvs]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GeneratorConfig":
        """Inverse of ``to_dict``."""
        return cls(**dict(d))

    @classmethod
    def released(cls, code_layer: str = "fc6") -> "GeneratorConfig":
        """The DeePSiM release's generator for CaffeNet's ``code_layer`` (fc6, fc7, fc8 or pool5)."""
        if code_layer in ("fc6", "fc7"):
            return cls(code_layer=code_layer)
        if code_layer == "fc8":
            return cls(code_size=1000, code_layer="fc8")
        if code_layer == "pool5":
            return cls(code_size=256 * 6 * 6, fc=(), reshape=(256, 6, 6), convs=_POOL5_CONVS, code_layer="pool5")
        raise ValueError(f"no released generator for code layer {code_layer!r}; released: {', '.join(CODE_LAYERS)}")

    @classmethod
    def mnist(cls, code_size: int = 256) -> "GeneratorConfig":
        """A small generator for ``CaffeNetConfig.mnist()``: code -> 1x32x32, centre crop 28 (offset 2)."""
        return cls(code_size=code_size, fc=(256, 256, 512), reshape=(32, 4, 4),
                   deconvs=(DeconvSpec(32, 4, 2, 1), DeconvSpec(64, 3, 1, 1), DeconvSpec(32, 4, 2, 1),
                            DeconvSpec(32, 3, 1, 1), DeconvSpec(16, 4, 2, 1), DeconvSpec(16, 3, 1, 1),
                            DeconvSpec(8, 3, 1, 1), DeconvSpec(8, 3, 1, 1), DeconvSpec(1, 3, 1, 1)),
                   output_size=32, crop_size=28)


def generator_tap_names(config: GeneratorConfig | None = None) -> tuple[str, ...]:
    """All tap names in forward order (default: the fc6 generator's)."""
    config = GeneratorConfig() if config is None else config
    names: list[str] = []
    if config.fc:
        for name in FC_LAYERS:
            names += [f"{name}:pre", name]
        names.append("reshape_defc5")
    for name in CONV_LAYERS[:len(config.convs)] + DECONV_LAYERS[:-1]:
        names += [f"{name}:pre", name]
    names.append(DECONV_LAYERS[-1])
    return tuple(names)


def generator_tap_shapes(config: GeneratorConfig) -> dict[str, tuple[int, ...]]:
    """Per-example shape of every tap: (width,) for fc layers, (H, W, C) for maps."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, width in zip(FC_LAYERS, config.fc):
        shapes[f"{name}:pre"] = shapes[name] = (width,)
    c, h, w = config.reshape
    shapes["reshape_defc5"] = (h, w, c)
    for name, spec in zip(CONV_LAYERS, config.convs):
        h = (h + 2 * spec.pad - spec.kernel) // spec.stride + 1
        w = (w + 2 * spec.pad - spec.kernel) // spec.stride + 1
        shapes[f"{name}:pre"] = shapes[name] = (h, w, spec.features)
    for name, spec in zip(DECONV_LAYERS, config.deconvs):
        h = spec.stride * (h - 1) + spec.kernel - 2 * spec.pad
        w = spec.stride * (w - 1) + spec.kernel - 2 * spec.pad
        shapes[f"{name}:pre"] = shapes[name] = (h, w, spec.features)
    del shapes[f"{DECONV_LAYERS[-1]}:pre"]  # deconv0 is linear: no in-place layer, no separate pre value
    return {name: shapes[name] for name in generator_tap_names(config)}


def chw_code_to_hwc(codes: Any, config: GeneratorConfig) -> Any:
    """Map codes flattened in Caffe's C, H, W order -> jaxviz's H, W, C order (vector codes unchanged)."""
    if not config.code_is_map:
        return codes
    c, h, w = config.reshape
    lead = codes.shape[:-1]
    return codes.reshape(*lead, c, h, w).swapaxes(-3, -2).swapaxes(-2, -1).reshape(*lead, c * h * w)


def crop_to_classifier(image: jax.Array, config: GeneratorConfig = GeneratorConfig()) -> jax.Array:
    """Centre crop of an NHWC generator image to the classifier's input (227 at offset 14 by default)."""
    o, s = config.crop_offset, config.crop_size
    return image[:, o:o + s, o:o + s, :]


class Generator(nn.Module):
    """A DeePSiM generator returning the requested taps; see the module docstring for tap names."""

    config: GeneratorConfig = GeneratorConfig()

    @staticmethod
    def tap_names(config: GeneratorConfig | None = None) -> tuple[str, ...]:
        """All tap names in forward order."""
        return generator_tap_names(config)

    @nn.compact
    def __call__(self, code: jax.Array, taps: Sequence[str] = ("deconv0",)) -> dict[str, jax.Array]:
        cfg = self.config
        tap = TapRecorder(taps, generator_tap_names(cfg), "Generator")
        if code.ndim != 2 or code.shape[-1] != cfg.code_size:
            raise ValueError(f"Generator: expected codes of shape (N, {cfg.code_size}), got {code.shape}")

        def leaky(name: str, h: jax.Array, as_caffe=lambda v: v) -> jax.Array:
            tap(f"{name}:pre", as_caffe(h))
            h = layers.leaky_relu(h, cfg.negative_slope)
            tap(name, as_caffe(h))
            return h

        def dense(i: int, h: jax.Array, as_caffe=lambda v: v) -> jax.Array:
            return leaky(FC_LAYERS[i], CaffeDense(cfg.fc[i], name=FC_LAYERS[i])(h), as_caffe)

        c, hh, ww = cfg.reshape

        def defc5_units_in_caffe_order(v: jax.Array) -> jax.Array:
            # defc5's outputs are computed in H, W, C order (see module docstring); taps show Caffe's order.
            return v.reshape(v.shape[0], hh, ww, c).transpose(0, 3, 1, 2).reshape(v.shape[0], -1)

        def deconv(i: int, h: jax.Array) -> jax.Array:
            s, name = cfg.deconvs[i], DECONV_LAYERS[i]
            return CaffeDeconv(s.features, (s.kernel,) * 2, (s.stride,) * 2, (s.pad,) * 2, name=name)(h)

        def conv(i: int, h: jax.Array) -> jax.Array:
            s = cfg.convs[i]
            return CaffeConv(s.features, (s.kernel,) * 2, (s.stride,) * 2, (s.pad,) * 2, name=CONV_LAYERS[i])(h)

        try:
            if cfg.fc:
                h = dense(0, code)                      # defc7
                h = dense(1, h)                         # defc6
                h = dense(2, h, defc5_units_in_caffe_order)  # defc5
                h = tap("reshape_defc5", h.reshape(h.shape[0], hh, ww, c))  # see module docstring: layout
            else:
                h = code.reshape(code.shape[0], hh, ww, c)  # a map code, flattened in H, W, C order
            for i in range(len(cfg.convs)):
                h = leaky(CONV_LAYERS[i], conv(i, h))
            h = leaky("deconv5", deconv(0, h))
            h = leaky("conv5_1", deconv(1, h))
            h = leaky("deconv4", deconv(2, h))
            h = leaky("conv4_1", deconv(3, h))
            h = leaky("deconv3", deconv(4, h))
            h = leaky("conv3_1", deconv(5, h))
            h = leaky("deconv2", deconv(6, h))
            h = leaky("deconv1", deconv(7, h))
            tap("deconv0", deconv(8, h))           # linear: the image
        except AllTapsComputed:
            pass  # every requested tap is in: deeper layers are neither traced nor need parameters
        return tap.values
