"""Non-finite weights: a damaged file or a diverged training run, named before anything is built on them."""

from __future__ import annotations

import warnings

import numpy as np

from weights_convert.errors import NonFiniteWeightsError


def check_finite(blobs: dict[str, tuple[np.ndarray, ...]], layers: list[str], source: str,
                 allow: bool = False, how_to_allow: str = "pass --allow-nonfinite to convert it anyway"
                 ) -> dict[str, int]:
    """Count NaN/Inf per ``layer/blob``; ``NonFiniteWeightsError`` naming the first unless ``allow``."""
    found: dict[str, int] = {}
    for layer in layers:
        for i, blob in enumerate(blobs.get(layer, ())):
            values = np.asarray(blob)
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            if not bad:
                continue
            nan = int(np.count_nonzero(np.isnan(values)))
            if not allow:
                raise NonFiniteWeightsError(
                    f"{bad} of {values.size} weights are not finite ({nan} NaN, {bad - nan} Inf): the file is "
                    f"damaged or comes from a diverged training run; {how_to_allow}",
                    file=source, layer=layer, blob=i)
            found[f"{layer}/{i}"] = bad
    if found:
        warnings.warn(f"{source}: non-finite weights used as they are ({', '.join(f'{k}: {v}' for k, v in found.items())})",
                      stacklevel=3)
    return found


__all__ = ["check_finite"]
