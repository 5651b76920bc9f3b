"""The modern libraries' default (Lucid, Lucent): a decorrelated Fourier image, Adam, robustness transforms."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import optax

from jaxviz.core import transforms as T
from jaxviz.core.fourier import FourierImage
from jaxviz.core.loop import Method
from jaxviz.models import preprocessing as pp
from jaxviz.recipes.preset import Preset


def fourier_image_for(height: int, width: int, preprocessing: dict[str, Any] | None = None,
                      **kwargs: Any) -> FourierImage:
    """A FourierImage matching a model's preprocessing card (``channel_order``, ``mean``, ``pixel_scale``).

    No card means real CaffeNet space. A mean given by name (Caffe's ``"image"``, the mean image) becomes
    the per-channel ImageNet mean: the parameterization subtracts one value per channel. The image starts
    at that mean colour (``offset``), which is Lucid's mid-grey for ImageNet-like data and black for digits
    (measured on the embedded pair, fc8, 128 steps: the judge reads 9 of 10 classes, and a person too,
    against textures a person does not read from a grey start).
    """
    pre = preprocessing or pp.CAFFE_BGR
    order = str(pre.get("channel_order", "BGR")).lower()
    mean = pre.get("mean")
    channels = 1 if order == "gray" else 3
    per_channel = np.broadcast_to(np.atleast_1d(pp.resolve_mean("channel", height, width) if isinstance(mean, str)
                                                else np.zeros(channels) if mean is None else mean).astype(float),
                                  (channels,))
    scale = float(pre.get("pixel_scale", 255.0))
    # The image starts at the data's mean colour (mid-grey for ImageNet, near black for MNIST digits):
    # sigmoid(offset) = mean / scale, per channel in RGB order.
    start = np.clip(per_channel[::-1] if order == "bgr" else per_channel, 0.01 * scale, 0.99 * scale) / scale
    kwargs.setdefault("offset", tuple(np.log(start / (1.0 - start)).tolist()))
    return FourierImage(height, width, channels=channels, mean=tuple(per_channel.tolist()), pixel_scale=scale,
                        bgr=order == "bgr", **kwargs)


def lucid(image_shape: Sequence[int], preprocessing: dict | None = None, steps: int = 512, lr: float = 0.05,
          robust: bool = True) -> Preset:
    """Lucid's / Lucent's default: a Fourier, colour-decorrelated image, Adam (0.05, 512 steps) and the
    standard robustness transforms (jitter, scale, rotate), adapted to fixed-size inputs."""
    h, w = int(image_shape[0]), int(image_shape[1])
    method = Method(steps, optax.adam(lr), transform=T.standard_transforms() if robust else None, name="lucid")
    return Preset(fourier_image_for(h, w, preprocessing), method, name="lucid")


__all__ = ["lucid", "fourier_image_for"]
