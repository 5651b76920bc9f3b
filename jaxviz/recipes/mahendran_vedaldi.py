"""Mahendran & Vedaldi (CVPR 2015): regularized inversion of a layer's features, with their public constants."""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from jaxviz.core import penalties
from jaxviz.core import transforms as T
from jaxviz.core.loop import Method
from jaxviz.core.objectives import feature_inversion
from jaxviz.core.params import NormalizedNoise
from jaxviz.core.updates import momentum_with_resets
from jaxviz.recipes.preset import Preset


# Their CNN experiments' lambda_TV by depth (experiment_cnn.m: MatConvNet layers 1-6, 7-12, 13-20).
MV_LAMBDA_TV = {
    **{t: 1.0 for t in ("conv1:pre", "conv1", "pool1", "norm1", "conv2:pre", "conv2")},
    **{t: 10.0 for t in ("pool2", "norm2", "conv3:pre", "conv3", "conv4:pre", "conv4")},
    **{t: 100.0 for t in ("conv5:pre", "conv5", "pool5", "fc6:pre", "fc6", "fc7:pre", "fc7", "fc8", "prob")},
}
# The published per-channel ImageNet std (0.229, 0.224, 0.225) on the 0-255 scale, averaged: a stand-in
# for their x0_sigma file (the average norm of mean-subtracted images), which is not redistributed.
IMAGENET_PIXEL_STD = 57.4


def mv_learning_rates(steps: int, lr: float) -> list[float]:
    """Their schedule ``lr x [1, 0.1, 0.01]`` over the first quarter, middle half and last quarter of ``steps``."""
    a, b = steps // 4, steps // 4 + steps // 2
    return [lr * (1.0 if i < a else 0.1 if i < b else 0.01) for i in range(steps)]


def mahendran_vedaldi(layer: str, reference_features: Any, image_shape: Sequence[int], alpha: float = 6.0,
                      beta: float = 2.0, lambda_alpha: float = 8e-10, lambda_tv: float | None = None,
                      steps: int = 400, lr: float = 0.004, momentum: float = 0.9,
                      x0_sigma: float | None = None, jitter: int = 0) -> Preset:
    """Regularized inversion of ``layer`` (Mahendran & Vedaldi, CVPR 2015) with their public code's constants.

    Minimizes ``||phi(x) - phi0||^2 / ||phi0||^2 + (lambda_tv/2 TV_beta(x) + lambda_alpha/2 ||x||_alpha^alpha)
    / x0_sigma^2`` by momentum 0.9 with steps ``lr x0_sigma^2 x [1, 0.1, 0.01]`` (100/200/100 of 400) and
    the momentum reset at each lr switch; start: noise of norm ``x0_sigma``. Constants from
    ``experiment_cnn.m``: alpha 6, lambda_alpha 8e-10, beta 2, lambda_tv 1 / 10 / 100 by depth
    (``MV_LAMBDA_TV``), lr 0.004, in Caffe space. ``x0_sigma`` (the average norm of mean-subtracted
    images) defaults to ``57.4 sqrt(H W C)``, an estimate from the published ImageNet pixel std, since
    their measured value is not available. The preset's target is ``reference_features`` (phi(x0) with
    its batch axis); ``jitter`` > 0 shifts the image randomly by up to that many pixels each step
    (their later IJCV version; the CVPR code has none). The TV is ``penalties.tv``: interior differences
    only, where their code also counts the last row/column with a replicated edge.
    """
    shape = tuple(int(d) for d in image_shape)
    sigma = float(IMAGENET_PIXEL_STD * np.sqrt(np.prod(shape))) if x0_sigma is None else float(x0_sigma)
    if lambda_tv is None:
        if layer not in MV_LAMBDA_TV:
            raise ValueError(f"no published lambda_tv for layer {layer!r}; pass lambda_tv")
        lambda_tv = MV_LAMBDA_TV[layer]
    scale = 1.0 / (2.0 * sigma ** 2)
    objective = (feature_inversion(layer) - (lambda_alpha * scale) * penalties.alpha_norm(alpha)
                 - (lambda_tv * scale) * penalties.tv(beta))
    method = Method(steps, momentum_with_resets([r * sigma ** 2 for r in mv_learning_rates(steps, lr)], momentum),
                    transform=T.jitter(jitter) if jitter > 0 else None, name="mahendran_vedaldi")
    return Preset(NormalizedNoise(shape, sigma), method, objective=objective,
                  target=jnp.asarray(reference_features, jnp.float32), name="mahendran_vedaldi")


__all__ = ["MV_LAMBDA_TV", "IMAGENET_PIXEL_STD", "mv_learning_rates", "mahendran_vedaldi"]
