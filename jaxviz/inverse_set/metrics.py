"""How spread an inverse set is: mean pairwise distance of its samples, in E space and in pixel space."""

from __future__ import annotations

import numpy as np


def mean_pairwise_distance(x: np.ndarray, chunk: int = 256) -> float:
    """Mean Euclidean distance over pairs i < j of the rows of ``x`` (flattened), in chunks of one matmul."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    n = len(x)
    if n < 2:
        return 0.0
    sq = np.sum(x * x, axis=1)
    total = 0.0
    for i in range(0, n, chunk):
        d2 = sq[i:i + chunk, None] + sq[None, :] - 2.0 * x[i:i + chunk] @ x.T
        total += np.sqrt(np.maximum(d2, 0.0)).sum()
    return float(total / (n * (n - 1)))


def diversity_figures(encodings: np.ndarray, images: np.ndarray) -> dict:
    """Mean pairwise distance of the samples in E space and in pixel (input) space."""
    return {"mean_pairwise_distance_E": mean_pairwise_distance(encodings),
            "mean_pairwise_distance_pixels": mean_pairwise_distance(images)}


__all__ = ["mean_pairwise_distance", "diversity_figures"]
