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
    the per-channel ImageNet mean: the parameterization subtracts one value per channel.
    """
    pre = preprocessing or pp.CAFFE_BGR
    order = str(pre.get("channel_order", "BGR")).lower()
    mean = pre.get("mean")
    channels = 1 if order == "gray" else 3
    per_channel = pp.MEAN_BGR if isinstance(mean, str) else np.zeros(channels) if mean is None else mean
    return FourierImage(height, width, channels=channels, mean=tuple(np.atleast_1d(per_channel).astype(float)),
                        pixel_scale=float(pre.get("pixel_scale", 255.0)), bgr=order == "bgr", **kwargs)


def lucid(image_shape: Sequence[int], preprocessing: dict | None = None, steps: int = 512, lr: float = 0.05,
          robust: bool = True) -> Preset:
    """Lucid's / Lucent's default: a Fourier, colour-decorrelated image, Adam (0.05, 512 steps) and the
    standard robustness transforms (jitter, scale, rotate), adapted to fixed-size inputs."""
    h, w = int(image_shape[0]), int(image_shape[1])
    method = Method(steps, optax.adam(lr), transform=T.standard_transforms() if robust else None, name="lucid")
    return Preset(fourier_image_for(h, w, preprocessing), method, name="lucid")


__all__ = ["lucid", "fourier_image_for"]
