"""LeNet as in Caffe's MNIST example (``examples/mnist/lenet.prototxt``) as an explicit Flax module.

conv1 (20, 5x5) -> pool1 (max 2/2) -> conv2 (50, 5x5) -> pool2 (max 2/2) -> ip1 (500) -> ReLU -> ip2 (10)
-> prob. As in Caffe's example there is no non-linearity after the convolutions; the ReLU on ip1 is in
place. Inputs are NHWC float32 in the space the model's card describes (the embedded "judge" uses the
embedded classifier's: gray, pixel 0-255 minus the training mean; Caffe's own example scales by 1/256
instead, which only rescales the first layer). The forward pass returns a dict of *taps*, named like
Caffe's blobs:

- ``"conv1"``, ``"pool1"``, ``"conv2"``, ``"pool2"``: the maps;
- ``"ip1"``: the blob after the in-place ReLU; ``"ip1:pre"``: the inner product's output before it;
- ``"ip2"`` (logits); ``"prob"`` (softmax).

Only the layers up to the deepest requested tap are run (and, under ``init``, created).
Parameters are named by Caffe layer: ``{"conv1": {"kernel", "bias"}, ..., "ip2": {...}}`` in the layouts
of ``jaxviz.models.modules``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax

from jaxviz.models import layers
from jaxviz.models._taps import AllTapsComputed, TapRecorder
from jaxviz.models.modules import CaffeConv, CaffeDense

LAYERS = ("conv1", "conv2", "ip1", "ip2")


@dataclasses.dataclass(frozen=True)
class LeNetConfig:
    """LeNet's sizes; the defaults are Caffe's MNIST example (28x28x1, 20/50 channels, ip1 500, 10 classes)."""

    input_size: int = 28
    in_channels: int = 1
    conv1: int = 20
    conv2: int = 50
    kernel: int = 5
    pool_kernel: int = 2
    pool_stride: int = 2
    ip1: int = 500
    num_classes: int = 10

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if int(value) != value or int(value) < 1:
                raise ValueError(f"LeNetConfig: {field.name} must be a positive integer, got {value!r}")
            object.__setattr__(self, field.name, int(value))
        for name, shape in lenet_tap_shapes(self).items():
            if min(shape) < 1:
                raise ValueError(f"LeNetConfig: tap {name!r} would have shape {shape} for a "
                                 f"{self.input_size}x{self.input_size} input; use larger inputs or smaller "
                                 f"kernels/strides")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for checkpoint metadata)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LeNetConfig":
        """Inverse of ``to_dict``."""
        return cls(**dict(d))


def lenet_tap_names(config: LeNetConfig | None = None) -> tuple[str, ...]:
    """All tap names in forward order (the topology is fixed, so ``config`` does not change them)."""
    del config
    return ("conv1", "pool1", "conv2", "pool2", "ip1:pre", "ip1", "ip2", "prob")


def lenet_tap_shapes(config: LeNetConfig) -> dict[str, tuple[int, ...]]:
    """Per-example shape of every tap: (H, W, C) for maps, (width,) for vectors."""
    shapes: dict[str, tuple[int, ...]] = {}
    size = config.input_size
    for name, width in (("1", config.conv1), ("2", config.conv2)):
        size = size - config.kernel + 1
        shapes[f"conv{name}"] = (size, size, width)
        size = layers.caffe_pool_output_size(size, config.pool_kernel, config.pool_stride, 0)
        shapes[f"pool{name}"] = (size, size, width)
    shapes["ip1:pre"] = shapes["ip1"] = (config.ip1,)
    shapes["ip2"] = shapes["prob"] = (config.num_classes,)
    return {name: shapes[name] for name in lenet_tap_names(config)}


class LeNet(nn.Module):
    """LeNet forward pass returning the requested taps; see the module docstring for tap names."""

    config: LeNetConfig = LeNetConfig()

    @staticmethod
    def tap_names(config: LeNetConfig | None = None) -> tuple[str, ...]:
        """All tap names in forward order."""
        return lenet_tap_names(config)

    @nn.compact
    def __call__(self, x: jax.Array, taps: Sequence[str] = ("ip2",), *,
                 deterministic: bool = True) -> dict[str, jax.Array]:
        del deterministic  # no dropout in LeNet; accepted so callers can treat every classifier alike
        cfg = self.config
        tap = TapRecorder(taps, lenet_tap_names(cfg), "LeNet")
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels:
            raise ValueError(f"LeNet: expected NHWC input with {cfg.in_channels} channels, got shape {x.shape}")
        k, pk, ps = (cfg.kernel,) * 2, (cfg.pool_kernel,) * 2, (cfg.pool_stride,) * 2
        try:
            h = tap("conv1", CaffeConv(cfg.conv1, k, name="conv1")(x))
            h = tap("pool1", layers.max_pool(h, pk, ps))
            h = tap("conv2", CaffeConv(cfg.conv2, k, name="conv2")(h))
            h = tap("pool2", layers.max_pool(h, pk, ps))
            h = tap("ip1:pre", CaffeDense(cfg.ip1, name="ip1")(h))
            h = tap("ip1", layers.leaky_relu(h))
            logits = tap("ip2", CaffeDense(cfg.num_classes, name="ip2")(h))
            tap("prob", jax.nn.softmax(logits, axis=-1))
        except AllTapsComputed:
            pass  # every requested tap is in: deeper layers are neither traced nor need parameters
        return tap.values


__all__ = ["LAYERS", "LeNet", "LeNetConfig", "lenet_tap_names", "lenet_tap_shapes"]
