"""Scores: the evidence that travels with every picture, computed from real data and a second model.

- ``percentile_of``: where the visualization's activation sits among the same unit's activations on a
  reference set of real images (100: above every one).
- ``path_similarity``: after "Don't trust your eyes" (Geirhos et al. 2023), whether the visualization
  reaches the unit the way real inputs do. At each layer below the target, the image's channel profile
  (conv maps averaged over space) is correlated with those of the unit's top real exemplars and with
  those of random real images; the score is the mean over layers of (top - random). Positive: the image
  travels the exemplars' path; near zero or negative: it reaches the unit some other way (a fooling
  image, a few pixels driven hard).
- ``mean_pairwise_distance``: the spread of several seeds of one unit in a layer's feature space.
- ``flags_for``: what went wrong, with the reason and the likely fix; among them ``silent_on_real``, a
  rectified unit (or its pre-activation) at or below 0 on every reference input (its percentile and path check then say little, and a
  generator trained on real inputs was never taught to draw what drives it).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

NEVER_FIRED = "never_fired"
NOT_ON_TOP = "not_on_top"
STOPPED_NAN = "stopped_nan"
WEAKER_THAN_REAL = "weaker_than_real"
JUDGE_DISAGREES = "judge_disagrees"
SILENT_ON_REAL = "silent_on_real"


@dataclasses.dataclass(frozen=True)
class Flag:
    """Something a result did not do: a short name, why it was raised, and what to try."""

    name: str     # one of the module's flag names
    reason: str   # what was observed
    fix: str      # the likely fix

    def as_dict(self) -> dict:
        """The flag as a JSON-ready dict."""
        return dataclasses.asdict(self)


def percentile_of(value: float, reference: np.ndarray) -> float:
    """Percent of ``reference`` below ``value`` (ties count half), 0-100; NaN without a reference."""
    ref = np.asarray(reference, np.float64).ravel()
    if ref.size == 0 or not np.isfinite(value):
        return float("nan")
    return float(100.0 * (np.mean(ref < value) + 0.5 * np.mean(ref == value)))


def _rows_zscored(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Pearson correlations between rows of ``a`` and rows of ``b`` (0 for a flat row)."""
    return _rows_zscored(a) @ _rows_zscored(b).T


def path_similarity(image_features: Sequence[np.ndarray], top_features: Sequence[np.ndarray],
                    random_features: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the mean over layers of corr(image, top exemplars) - corr(image, random real images).

    Each argument holds one (N, features) array per layer. Returns (score (N,), per-layer (N, layers)).
    """
    per_layer = np.stack([correlations(v, t).mean(axis=1) - correlations(v, r).mean(axis=1)
                          for v, t, r in zip(image_features, top_features, random_features)], axis=1)
    return per_layer.mean(axis=1), per_layer


def mean_pairwise_distance(features: np.ndarray) -> float:
    """Mean Euclidean distance over pairs of rows (0 for fewer than two)."""
    x = np.asarray(features, np.float64).reshape(len(features), -1)
    if len(x) < 2:
        return 0.0
    d2 = np.sum(x * x, 1)[:, None] + np.sum(x * x, 1)[None, :] - 2 * x @ x.T
    iu = np.triu_indices(len(x), 1)
    return float(np.sqrt(np.maximum(d2[iu], 0.0)).mean())


def flags_for(layer: str, activation: float, trace_max: float, rank: int, failed_step: int,
              percentile: float = float("nan"), judge_label: str | None = None,
              target_label: str | None = None, rectified: bool = True,
              silent_references: int = 0) -> list[Flag]:
    """The flags of one result, each with its reason and fix (an empty list: nothing to flag).

    ``rectified``: whether ``layer`` is a ReLU's output (so a unit at 0 gets no gradient); a layer without
    one (logits, a pre-activation) that stayed below 0 is flagged with the fix that applies to it.
    ``silent_references``: when > 0, the unit is at or below 0 on every one of that many real reference inputs
    (flagged on a rectified layer and on a pre-activation, not on logits).
    """
    flags = []
    if failed_step >= 0:
        flags.append(Flag(STOPPED_NAN, f"the run met a NaN/Inf at step {failed_step} and stopped there",
                          "lower the learning rate or the steps' scale; check the input range of the model"))
    if max(activation, trace_max) <= 0 and not rectified:
        flags.append(Flag(NEVER_FIRED, f"{layer} stayed at or below 0 (it has no ReLU, so its gradient was not "
                          f"zero: the run did not move it far enough)",
                          "more steps or a larger learning rate, another seed, or another method"))
    elif max(activation, trace_max) <= 0:
        pre = "" if layer.endswith(":pre") else f" (--layer {layer}:pre)"
        flags.append(Flag(NEVER_FIRED, f"{layer} never rose above 0: a rectified unit that is off at the start "
                          f"gets no gradient",
                          f"optimize the pre-activation{pre}, another position (--position ROW,COL), or the "
                          f"spatial mean (position 'mean'); the unit may only fire at the border of real inputs"))
    elif rank > 0:
        flags.append(Flag(NOT_ON_TOP, f"{rank} unit(s) of {layer} are higher than the target on this image",
                          "maximize its selectivity across the layer (--objective tempered or log_softmax) "
                          "or take more steps"))
    if np.isfinite(percentile) and percentile < 50 and max(activation, trace_max) > 0:
        flags.append(Flag(WEAKER_THAN_REAL, f"the activation is below {percentile:.0f} % of real inputs' median",
                          "more steps, a larger learning rate, or a method with a generator prior (dgn_am)"))
    if judge_label is not None and target_label is not None and judge_label != target_label:
        flags.append(Flag(JUDGE_DISAGREES, f"the independent classifier reads the image as {judge_label!r}, "
                          f"not {target_label!r}", "try another method or seed; priors that keep images natural "
                          "(dgn_am) usually convince a second classifier"))
    # A pre-activation at or below 0 everywhere is the same unit's ReLU silent everywhere.
    if silent_references > 0 and (rectified or layer.endswith(":pre")):
        flags.append(Flag(SILENT_ON_REAL, f"{layer} unit is at or below 0 on all {silent_references} real "
                          f"reference inputs (its ReLU never fires on them): "
                          f"any activation is 'above every real one', its path check has no exemplars that fire "
                          f"it, and a generator trained on real inputs (dgn_am, sampler) was never taught to "
                          f"draw what drives it",
                          "read it as a unit this data does not use (a conv channel: at this position; try "
                          "another, or the spatial mean); a pixel-space method with its selectivity "
                          "(--method pixel --objective log_softmax) can still drive it, through images unlike "
                          "real ones"))
    return flags


__all__ = ["Flag", "NEVER_FIRED", "NOT_ON_TOP", "STOPPED_NAN", "WEAKER_THAN_REAL", "JUDGE_DISAGREES", "SILENT_ON_REAL",
           "percentile_of", "correlations", "path_similarity", "mean_pairwise_distance", "flags_for"]
