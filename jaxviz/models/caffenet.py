"""CaffeNet (BVLC reference CaffeNet) as an explicit Flax module, plus scaled-down variants via its config.

Inputs are NHWC float32 in Caffe space: BGR, 0-255 scale, mean subtracted (see ``preprocessing``).
The forward pass returns a dict of *taps*, named like Caffe's blobs:

- ``"convN"``, ``"fc6"``, ``"fc7"``: the blob as Caffe holds it after the forward pass, i.e. after the
  in-place ReLU (and, when ``deterministic=False``, the in-place dropout of fc6/fc7);
- ``"convN:pre"``, ``"fc6:pre"``, ``"fc7:pre"``: the value the convolution / inner product wrote, before
  the in-place ReLU;
- ``"pool1"``, ``"norm1"``, ``"pool2"``, ``"norm2"``, ``"pool5"``; ``"fc8"`` (logits); ``"prob"`` (softmax).

Only the layers up to the deepest requested tap are run (and, under ``init``, created).
Parameters are named by Caffe layer: ``{"conv1": {"kernel", "bias"}, ..., "fc8": {...}}`` in the layouts
of ``jaxviz.models.modules``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax

from jaxviz.models import layers
from jaxviz.models._taps import AllTapsComputed, TapRecorder
from jaxviz.models.modules import CaffeConv, CaffeDense


class ConvSpec(NamedTuple):
    """One CaffeNet convolution: output channels, square kernel, stride, padding, groups."""

    features: int
    kernel: int
    stride: int = 1
    pad: int = 0
    group: int = 1


@dataclasses.dataclass(frozen=True)
class CaffeNetConfig:
    """CaffeNet's sizes; the defaults are the released BVLC reference CaffeNet (227x227 BGR, 1000 classes).

    The topology is fixed (conv1, pool1, norm1, conv2, pool2, norm2, conv3, conv4, conv5, pool5, fc6, fc7,
    fc8); a config changes input size/channels, widths, kernels, groups and the pooling/LRN constants.
    """

    input_size: int = 227
    in_channels: int = 3
    convs: tuple[ConvSpec, ...] = (
        ConvSpec(96, 11, 4, 0, 1),
        ConvSpec(256, 5, 1, 2, 2),
        ConvSpec(384, 3, 1, 1, 1),
        ConvSpec(384, 3, 1, 1, 2),
        ConvSpec(256, 3, 1, 1, 2),
    )
    pool_kernel: int = 3
    pool_stride: int = 2
    lrn_local_size: int = 5
    lrn_alpha: float = 1e-4
    lrn_beta: float = 0.75
    lrn_k: float = 1.0
    fc: tuple[int, ...] = (4096, 4096, 1000)
    dropout_rate: float = 0.5

    def __post_init__(self):
        # Accept plain tuples/lists (e.g. from JSON) but store NamedTuples so the config stays hashable.
        object.__setattr__(self, "convs", tuple(ConvSpec(*map(int, c)) for c in self.convs))
        object.__setattr__(self, "fc", tuple(int(w) for w in self.fc))
        if len(self.convs) != 5:
            raise ValueError(f"CaffeNetConfig: needs 5 conv specs (conv1..conv5), got {len(self.convs)}")
        if len(self.fc) != 3:
            raise ValueError(f"CaffeNetConfig: needs 3 fc widths (fc6, fc7, fc8), got {len(self.fc)}")
        c_in = self.in_channels
        for i, spec in enumerate(self.convs, 1):
            if spec.group < 1 or c_in % spec.group or spec.features % spec.group:
                raise ValueError(f"CaffeNetConfig: conv{i} has {c_in} input and {spec.features} output "
                                 f"channels, not both divisible by group={spec.group}")
            c_in = spec.features
        for name, shape in caffenet_tap_shapes(self).items():
            if min(shape) < 1:
                raise ValueError(f"CaffeNetConfig: tap {name!r} would have shape {shape} for a "
                                 f"{self.input_size}x{self.input_size} input; use larger inputs or smaller "
                                 f"kernels/strides")

    @property
    def num_classes(self) -> int:
        """Width of fc8 / prob."""
        return self.fc[-1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for checkpoint metadata)."""
        d = dataclasses.asdict(self)
        d["convs"] = [list(c) for c in self.convs]
        d["fc"] = list(self.fc)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CaffeNetConfig":
        """Inverse of ``to_dict``."""
        return cls(**dict(d))

    @classmethod
    def mnist(cls, num_classes: int = 10) -> "CaffeNetConfig":
        """A small CaffeNet for 28x28x1 inputs (same topology, groups kept, fewer channels)."""
        return cls(input_size=28, in_channels=1,
                   convs=(ConvSpec(32, 5, 1, 2, 1), ConvSpec(64, 5, 1, 2, 2), ConvSpec(96, 3, 1, 1, 1),
                          ConvSpec(96, 3, 1, 1, 2), ConvSpec(64, 3, 1, 1, 2)),
                   fc=(256, 256, num_classes))


def caffenet_tap_names(config: CaffeNetConfig | None = None) -> tuple[str, ...]:
    """All tap names in forward order (the topology is fixed, so ``config`` does not change them)."""
    del config
    return ("conv1:pre", "conv1", "pool1", "norm1",
            "conv2:pre", "conv2", "pool2", "norm2",
            "conv3:pre", "conv3", "conv4:pre", "conv4", "conv5:pre", "conv5", "pool5",
            "fc6:pre", "fc6", "fc7:pre", "fc7", "fc8", "prob")


def caffenet_tap_shapes(config: CaffeNetConfig) -> dict[str, tuple[int, ...]]:
    """Per-example shape of every tap: (H, W, C) for maps, (width,) for vectors."""
    shapes: dict[str, tuple[int, ...]] = {}
    size = config.input_size

    def pooled(s: int) -> int:
        return layers.caffe_pool_output_size(s, config.pool_kernel, config.pool_stride, 0)

    for i, spec in enumerate(config.convs, 1):
        size = (size + 2 * spec.pad - spec.kernel) // spec.stride + 1
        shapes[f"conv{i}:pre"] = shapes[f"conv{i}"] = (size, size, spec.features)
        if i in (1, 2, 5):
            size = pooled(size)
            shapes[f"pool{i}"] = (size, size, spec.features)
            if i != 5:
                shapes[f"norm{i}"] = shapes[f"pool{i}"]
    for name, width in zip(("fc6", "fc7"), config.fc):
        shapes[f"{name}:pre"] = shapes[name] = (width,)
    shapes["fc8"] = shapes["prob"] = (config.fc[2],)
    return {name: shapes[name] for name in caffenet_tap_names(config)}


class CaffeNet(nn.Module):
    """CaffeNet forward pass returning the requested taps; see the module docstring for tap names."""

    config: CaffeNetConfig = CaffeNetConfig()

    @staticmethod
    def tap_names(config: CaffeNetConfig | None = None) -> tuple[str, ...]:
        """All tap names in forward order."""
        return caffenet_tap_names(config)

    @nn.compact
    def __call__(self, x: jax.Array, taps: Sequence[str] = ("fc8",), *,
                 deterministic: bool = True) -> dict[str, jax.Array]:
        cfg = self.config
        tap = TapRecorder(taps, caffenet_tap_names(cfg), "CaffeNet")
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels:
            raise ValueError(f"CaffeNet: expected NHWC input with {cfg.in_channels} channels, "
                             f"got shape {x.shape}")

        def conv_relu(i: int, h: jax.Array) -> jax.Array:
            spec, name = cfg.convs[i - 1], f"conv{i}"
            h = CaffeConv(spec.features, (spec.kernel,) * 2, (spec.stride,) * 2, (spec.pad,) * 2,
                          group=spec.group, name=name)(h)
            h = tap(f"{name}:pre", h)
            return tap(name, layers.leaky_relu(h))

        def pool(i: int, h: jax.Array) -> jax.Array:
            k, s = cfg.pool_kernel, cfg.pool_stride
            return tap(f"pool{i}", layers.max_pool(h, (k, k), (s, s)))

        def norm(i: int, h: jax.Array) -> jax.Array:
            h = layers.lrn_across_channels(h, cfg.lrn_local_size, cfg.lrn_alpha, cfg.lrn_beta, cfg.lrn_k)
            return tap(f"norm{i}", h)

        def fc_relu_dropout(i: int, h: jax.Array) -> jax.Array:
            name = f"fc{i}"
            h = tap(f"{name}:pre", CaffeDense(cfg.fc[i - 6], name=name)(h))
            h = layers.leaky_relu(h)
            # Caffe's dropout is in place too, so in training the fc6/fc7 blobs hold the dropped-out value.
            h = nn.Dropout(cfg.dropout_rate, deterministic=deterministic, name=f"drop{i}")(h)
            return tap(name, h)

        try:
            h = conv_relu(1, x)
            h = pool(1, h)
            h = norm(1, h)
            h = conv_relu(2, h)
            h = pool(2, h)
            h = norm(2, h)
            h = conv_relu(3, h)
            h = conv_relu(4, h)
            h = conv_relu(5, h)
            h = pool(5, h)
            h = fc_relu_dropout(6, h)
            h = fc_relu_dropout(7, h)
            logits = tap("fc8", CaffeDense(cfg.fc[2], name="fc8")(h))
            tap("prob", jax.nn.softmax(logits, axis=-1))
        except AllTapsComputed:
            pass  # every requested tap is in: deeper layers are neither traced nor need parameters
        return tap.values
