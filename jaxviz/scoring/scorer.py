"""``Scorer``: one object per (model, reference set, judge) that scores batches of results of one layer.

It computes the reference set's activations once per layer, then for each visualization: its activation
and rank (from the run), its percentile among real inputs, the judge's label for class units, the path
check against the unit's top real exemplars, the spread of several seeds of a unit, and the flags.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import numpy as np

from jaxviz.core.objectives import Position
from jaxviz.models import shipped
from jaxviz.models.model import Model
from jaxviz.scoring import reference as ref_mod
from jaxviz.scoring.reference import ReferenceSet, activations, channel_features, top_k_rows, unit_table
from jaxviz.scoring.scores import Flag, flags_for, mean_pairwise_distance, path_similarity, percentile_of

TOP_EXEMPLARS = 10     # real images that fire the unit most, for the path check
RANDOM_IMAGES = 50     # random real images, the path check's baseline
CLASS_LAYERS = ("fc8", "prob")


@dataclasses.dataclass(frozen=True)
class Report:
    """How far to trust one visualization: its figures, a second opinion, the path check, flags."""

    layer: str                        # the layer of the target unit
    unit: int                         # the unit (or channel) index
    activation: float                 # the target's activation on the scored image
    rank: int                         # units of the layer above it on that image (0: top; -1: unknown)
    percentile: float                 # percent of real reference inputs below that activation (NaN: none)
    judge_label: str | None           # the independent classifier's label (class units with a judge)
    judge_probability: float | None   # its probability for that label
    target_label: str | None          # the label the unit stands for (class units)
    path_score: float                 # mean over layers of corr(top exemplars) - corr(random images)
    seed_diversity: float | None      # mean pairwise feature distance among this unit's seeds (None: 1 seed)
    flags: tuple[Flag, ...]           # what went wrong, each with its reason and fix
    preprocessing: dict               # the model's input space, to show the image

    def as_dict(self) -> dict:
        """JSON-ready (the card left out)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("preprocessing", "flags")}
        d["flags"] = [f.as_dict() for f in self.flags]
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}

    def line(self) -> str:
        """One line for a terminal."""
        parts = [f"{self.layer} unit {self.unit}: activation {self.activation:.4g}", f"rank {self.rank}"]
        if np.isfinite(self.percentile):
            parts.append(f"percentile {self.percentile:.1f} among real inputs")
        if self.judge_label is not None:
            parts.append(f"judge reads {self.judge_label!r} (p {self.judge_probability:.2f})")
        if np.isfinite(self.path_score):
            parts.append(f"path score {self.path_score:+.2f}")
        if self.seed_diversity is not None:
            parts.append(f"seed spread {self.seed_diversity:.3g}")
        text = ", ".join(parts)
        return text + "".join(f"\n  flag {f.name}: {f.reason}; try: {f.fix}" for f in self.flags)


class Scorer:
    """Scores visualizations of one model's units against real data and an independent classifier."""

    def __init__(self, model: Model, reference: ReferenceSet | None = None, judge: Model | None = None,
                 labels: Sequence[str] | None = None, judge_labels: Sequence[str] | None = None):
        self.model, self.judge = model, judge
        self.reference = ref_mod.embedded_reference(model) if reference is None else reference
        self.labels = None if labels is None else list(labels)
        self.judge_labels = None if judge_labels is None else list(judge_labels)

    # ----- the reference set, once per layer --------------------------------------------------------------

    def path_layers(self, layer: str) -> tuple[str, ...]:
        """The rectified layers below ``layer`` in forward order (the path a real input takes to it)."""
        names = self.model.tap_names
        base = layer.split(":")[0]
        if base not in names:
            return ()
        below = names[:names.index(base)]
        return tuple(t for t in below if not t.endswith(":pre") and t != base and f"{base}:pre" != t)

    @functools.lru_cache(maxsize=8)
    def _reference_acts(self, layer: str) -> dict[str, np.ndarray]:
        taps = (layer,) + self.path_layers(layer)
        return activations(self.model, self.reference.images, taps)

    def reference_values(self, layer: str, position: Position) -> np.ndarray | None:
        """(N, units) of the layer over the reference set, or None without one."""
        if self.reference is None:
            return None
        return unit_table(self._reference_acts(layer), layer, position)

    # ----- scoring ----------------------------------------------------------------------------------------

    def _judge(self, images: np.ndarray) -> tuple[list[str | None], list[float | None]]:
        if self.judge is None:
            return [None] * len(images), [None] * len(images)
        taps = self.judge.tap_names
        if "prob" in taps or not taps:
            p = activations(self.judge, images, ("prob",))["prob"].reshape(len(images), -1)
        else:  # a judge without a softmax tap: its last layer's logits
            logits = activations(self.judge, images, (taps[-1],))[taps[-1]].reshape(len(images), -1)
            p = np.exp(logits - logits.max(1, keepdims=True))
            p = p / p.sum(1, keepdims=True)
        best = p.argmax(1)
        names = self.judge_labels or shipped.class_labels(p.shape[1]) or [str(i) for i in range(p.shape[1])]
        return [names[i] for i in best], [float(p[k, i]) for k, i in enumerate(best)]

    def is_class_layer(self, layer: str) -> bool:
        """Whether ``layer``'s units are classes (fc8/prob, or the layer the model's card names)."""
        return layer.split(":")[0] in (*CLASS_LAYERS, self.model.metadata.get("class_layer"))

    def is_rectified(self, layer: str) -> bool:
        """Whether ``layer`` is a ReLU's output: the network names its pre-activation (``fc6`` has
        ``fc6:pre``); for a network that names none, assumed so, as a hidden layer usually is."""
        names = self.model.tap_names
        if layer.endswith(":pre") or self.is_class_layer(layer):
            return False
        return f"{layer}:pre" in names if any(n.endswith(":pre") for n in names) else True

    def score(self, images: np.ndarray, layer: str, units: Sequence[int], position: Position = "center",
              trace_max: Sequence[float] | None = None, failed_step: Sequence[int] | None = None,
              seed_groups: Sequence[int] | None = None) -> list[Report]:
        """One report per image (N, H, W, C) of unit ``units[i]`` of ``layer``.

        The activation and rank are measured afresh on the image as given (no robustness transform);
        ``trace_max`` is the highest activation the run saw and ``failed_step`` where a NaN stopped it
        (both from the run, for the flags); ``seed_groups`` marks images that are seeds of the same unit.
        """
        images = np.asarray(images, np.float32)
        units = [int(u) for u in units]
        values = unit_table(activations(self.model, images, (layer,)), layer, position)
        activation = values[np.arange(len(units)), units]
        rank = (values > activation[:, None]).sum(axis=1)
        trace_max = activation if trace_max is None else np.asarray(trace_max, np.float64)
        failed_step = np.full(len(units), -1) if failed_step is None else np.asarray(failed_step)
        ref_values = self.reference_values(layer, position)
        paths = self._path_scores(images, layer, units, ref_values, position)
        is_class = self.is_class_layer(layer)
        labels = self.labels or shipped.class_labels(values.shape[1])
        judged, probs = self._judge(images) if is_class else ([None] * len(images), [None] * len(images))
        spread = self._seed_spread(images, layer, seed_groups)
        rectified = self.is_rectified(layer)
        # Units at 0 on every reference input, once per layer (not per image).
        silent = np.all(ref_values <= 0, axis=0) if ref_values is not None else np.zeros(values.shape[1], bool)
        reports = []
        for i, u in enumerate(units):
            pct = percentile_of(float(activation[i]), ref_values[:, u]) if ref_values is not None else float("nan")
            target = labels[u] if is_class and labels else str(u) if is_class else None
            judge = judged[i] if is_class else None
            flags = flags_for(layer, float(activation[i]), float(trace_max[i]), int(rank[i]), int(failed_step[i]),
                              pct, judge, target if judge is not None else None, rectified,
                              len(ref_values) if silent[u] else 0)
            reports.append(Report(layer, u, float(activation[i]), int(rank[i]), pct, judge, probs[i], target,
                                  float(paths[i]), spread[i], tuple(flags), dict(self.model.preprocessing)))
        return reports

    def _path_scores(self, images: np.ndarray, layer: str, units: list[int], ref_values: np.ndarray | None,
                     position: Position) -> np.ndarray:
        layers = self.path_layers(layer)
        if ref_values is None or not layers:
            return np.full(len(images), np.nan)
        ref = self._reference_acts(layer)
        mine = activations(self.model, images, layers)
        rng = np.random.default_rng(0)
        random_rows = rng.choice(len(self.reference.images), min(RANDOM_IMAGES, len(self.reference.images)),
                                 replace=False)
        scores = np.zeros(len(images))
        for u in sorted(set(units)):
            rows = [i for i, v in enumerate(units) if v == u]
            top = top_k_rows(ref_values[:, u], TOP_EXEMPLARS)
            score, _ = path_similarity([channel_features(mine[t][rows]) for t in layers],
                                       [channel_features(ref[t][top]) for t in layers],
                                       [channel_features(ref[t][random_rows]) for t in layers])
            scores[rows] = score
        return scores

    def _seed_spread(self, images: np.ndarray, layer: str, groups: Sequence[int] | None) -> list[float | None]:
        if groups is None:
            return [None] * len(images)
        groups = list(groups)
        layers = self.path_layers(layer)
        feature_layer = layers[-1] if layers else layer
        feats = channel_features(activations(self.model, images, (feature_layer,))[feature_layer])
        spread = {}
        for g in set(groups):
            rows = [i for i, v in enumerate(groups) if v == g]
            spread[g] = mean_pairwise_distance(feats[rows]) if len(rows) > 1 else None
        return [spread[g] for g in groups]


__all__ = ["Report", "Scorer", "TOP_EXEMPLARS", "RANDOM_IMAGES", "CLASS_LAYERS"]
