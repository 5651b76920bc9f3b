"""Network dissection (Bau et al. 2017): which units of a conv layer are detectors of a labelled concept.

Given images with per-pixel binary masks of named concepts (``MaskSet``), for every unit k of a layer:

1. the threshold ``T_k`` with ``P(a_k > T_k) = quantile`` over every position of every image's map
   (``np.quantile(a_k, 1 - quantile)``, numpy's linear interpolation; 0.005 in the paper, survey eq. 18);
2. each image's map is upsampled bilinearly to the mask size (``jax.image.resize``, half-pixel centres)
   and binarized: ``M_k = S_k > T_k``;
3. ``IoU(k, c) = sum |M_k & L_c| / sum |M_k | L_c|``, both sums over the whole set (eq. 19);
4. the unit's best concept is the one of highest IoU, and the unit is a detector of it when that IoU
   exceeds ``iou_threshold`` (0.04).

Step 2 upsamples the activations and then thresholds (Bau et al.'s ``M_k = S(A_k) > T_k``); the survey's
eq. 18 writes the threshold inside the interpolation, which for a bilinear S gives a mask that is not
binary until it is rounded again. ``net2vec`` fits Net2Vec's learned combination of these masks per
concept (survey eq. 20-21).

``synthetic_mask_set`` builds a small labelled set from the shipped digits (a generator, so nothing
extra ships): strokes dimmed to 200 of 255, concepts ``stroke``, ``background``, ``top_half`` and ``dot`` (a bright 2x2 square drawn
in an empty corner, about 0.5 % of the pixels, so a unit that fires on it alone reaches IoU near 1).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxviz.lenses.exemplars import check_units, layer_shape
from jaxviz.models import preprocessing as pp
from jaxviz.models import shipped
from jaxviz.models.model import Model

QUANTILE = 0.005
IOU_THRESHOLD = 0.04
DEFAULT_BATCH = 50
SYNTHETIC_CONCEPTS = ("stroke", "background", "top_half", "dot")
DOT = 2          # side of the synthetic dot, pixels
STROKE_LEVEL = 128  # a digit's pixel at or above this (of 255) is stroke
STROKE_MAX = 200    # the synthetic images' brightest stroke pixel; the dot is 255


@dataclasses.dataclass(frozen=True, eq=False)
class MaskSet:
    """Images with per-pixel concept masks, all at one mask size."""

    pixels: np.ndarray              # (N, H, W) gray or (N, H, W, 3) RGB uint8 display images
    masks: np.ndarray               # (N, Hm, Wm, C) bool: pixel in concept c
    concepts: tuple[str, ...]       # the C concept names, in mask order
    names: tuple[str, ...] = ()     # one per image (file stems), for tables


@dataclasses.dataclass(frozen=True, eq=False)
class Dissection:
    """Per unit of a layer: its threshold, its IoU with every concept, its best concept, detector or not."""

    layer: str
    units: np.ndarray          # (U,) unit ids
    concepts: tuple[str, ...]  # (C,) concept names
    thresholds: np.ndarray     # (U,) T_k: P(a_k > T_k) = quantile over all positions of all images
    iou: np.ndarray            # (U, C) IoU of the unit's binarized, upsampled maps with each concept
    quantile: float
    iou_threshold: float

    @property
    def best(self) -> np.ndarray:
        """(U,) index of each unit's highest-IoU concept."""
        return np.argmax(self.iou, axis=1)

    @property
    def best_iou(self) -> np.ndarray:
        """(U,) that IoU."""
        return self.iou.max(axis=1)

    @property
    def detector(self) -> np.ndarray:
        """(U,) bool: best IoU above ``iou_threshold``."""
        return self.best_iou > self.iou_threshold

    def rows(self) -> list[dict]:
        """One table row per unit: unit, best concept, its IoU, detector, threshold."""
        return [{"unit": int(u), "concept": self.concepts[int(b)], "iou": float(v), "detector": bool(d),
                 "threshold": float(t)}
                for u, b, v, d, t in zip(self.units, self.best, self.best_iou, self.detector, self.thresholds)]


@functools.lru_cache(maxsize=32)
def _maps(function, layer: str):
    return jax.jit(lambda params, x: function(params, x, (layer,))[layer])


def unit_masks(maps: jax.Array, thresholds: jax.Array, size: tuple[int, int]) -> jax.Array:
    """M_k: (N, h, w, U) maps upsampled bilinearly to ``size`` (half-pixel centres) and compared ``> T_k``."""
    maps = jnp.asarray(maps, jnp.float32)
    up = jax.image.resize(maps, (maps.shape[0], *size, maps.shape[-1]), "bilinear")
    return up > jnp.asarray(thresholds, jnp.float32)


@functools.lru_cache(maxsize=32)
def _overlaps(size: tuple[int, int]):
    def count(maps, thresholds, masks):
        on = unit_masks(maps, thresholds, size).astype(jnp.float32)     # (B, Hm, Wm, U)
        labels = masks.astype(jnp.float32)                             # (B, Hm, Wm, C)
        inter = jnp.einsum("bhwu,bhwc->uc", on, labels)
        return inter, on.sum(axis=(0, 1, 2)), labels.sum(axis=(0, 1, 2))
    return jax.jit(count)


def layer_maps(model: Model, images: np.ndarray, layer: str, units: np.ndarray,
               batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """(N, h, w, U) activation maps of ``layer``'s ``units``, one jitted forward per batch (last one padded)."""
    run = _maps(model.function, layer)
    parts = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], np.float32)
        n = len(batch)
        if n < batch_size and len(images) > batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - n, 0)])
        maps = np.asarray(jax.device_get(run(model.params, batch)))
        if maps.ndim != 4:
            raise ValueError(f"layer {layer!r} has no spatial map (shape {maps.shape[1:]}); dissect a conv layer")
        parts.append(maps[:n][..., units])
    return np.concatenate(parts)


def unit_thresholds(maps: np.ndarray, quantile: float = QUANTILE) -> np.ndarray:
    """(U,) T_k with P(a_k > T_k) = ``quantile`` over every position of every image of (N, h, w, U) maps."""
    return np.quantile(np.asarray(maps, np.float64).reshape(-1, maps.shape[-1]), 1.0 - quantile, axis=0)


def concept_iou(maps: np.ndarray, thresholds: np.ndarray, masks: np.ndarray,
                batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """(U, C) dataset IoU of the binarized, bilinearly upsampled maps (N, h, w, U) with masks (N, Hm, Wm, C)."""
    count = _overlaps(tuple(masks.shape[1:3]))
    thr = jnp.asarray(thresholds, jnp.float32)
    inter = np.zeros((maps.shape[-1], masks.shape[-1]))
    on = np.zeros(maps.shape[-1])
    labelled = np.zeros(masks.shape[-1])
    for start in range(0, len(maps), batch_size):
        i, o, lab = jax.device_get(count(maps[start:start + batch_size], thr, masks[start:start + batch_size]))
        inter += np.asarray(i, np.float64)
        on += np.asarray(o, np.float64)
        labelled += np.asarray(lab, np.float64)
    union = on[:, None] + labelled[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1.0), 0.0)


def dissect(model: Model, dataset: MaskSet, layer: str, quantile: float = QUANTILE,
            iou_threshold: float = IOU_THRESHOLD, units: Sequence[int] | None = None,
            batch_size: int = DEFAULT_BATCH) -> Dissection:
    """Network dissection of ``layer``'s units on a labelled set (see the module docstring)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if len(dataset.pixels) == 0 or len(dataset.pixels) != len(dataset.masks):
        raise ValueError(f"a mask set needs one mask stack per image, got {len(dataset.pixels)} images and "
                         f"{len(dataset.masks)} mask stacks")
    shape = layer_shape(model, layer)
    if len(shape) != 3:
        raise ValueError(f"layer {layer!r} has no spatial map (shape {shape}); dissect a conv layer")
    ids = check_units(units, shape[-1])
    images = pp.to_network(dataset.pixels, model.preprocessing)
    maps = layer_maps(model, images, layer, ids, batch_size)
    thresholds = unit_thresholds(maps, quantile)
    iou = concept_iou(maps, thresholds, np.asarray(dataset.masks, bool), batch_size)
    return Dissection(layer, ids, tuple(dataset.concepts), thresholds, iou, float(quantile), float(iou_threshold))


# ----- Net2Vec: a learned combination of units per concept (Fong & Vedaldi 2018; survey eq. 20-21) ------------

NET2VEC_STEPS = 300
NET2VEC_LR = 0.5


@dataclasses.dataclass(frozen=True, eq=False)
class Net2Vec:
    """Per concept: the learned unit weights and bias, and the IoU of the combined mask (eq. 21)."""

    layer: str
    units: np.ndarray          # (U,) unit ids, the order of the weights
    concepts: tuple[str, ...]  # (C,)
    weights: np.ndarray        # (C, U) w_c: the weight of each unit's binarized map
    bias: np.ndarray           # (C,)
    iou: np.ndarray            # (C,) IoU of sigmoid(sum_k w_k M_k + b) > 0.5 with the concept, over the set
    loss: np.ndarray           # (C,) the final balanced binary cross entropy

    def rows(self) -> list[dict]:
        """One row per concept: its IoU and its highest-weighted units."""
        return [{"concept": c, "iou": float(self.iou[i]),
                 "top_units": [int(self.units[j]) for j in np.argsort(-self.weights[i], kind="stable")[:8]]}
                for i, c in enumerate(self.concepts)]


def _fit_concept(features: jax.Array, labels: jax.Array, steps: int, lr: float):
    # Net2Vec's per-pixel binary cross entropy, positives weighted by 1 - (their share) so a rare concept
    # is not fitted by predicting "absent" everywhere; SGD with momentum as in the paper.
    alpha = 1.0 - labels.mean()
    opt = optax.sgd(lr, momentum=0.9)

    def loss_fn(params):
        logits = features @ params[0] + params[1]
        return -jnp.mean(alpha * labels * jax.nn.log_sigmoid(logits)
                         + (1.0 - alpha) * (1.0 - labels) * jax.nn.log_sigmoid(-logits))

    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    params = (jnp.zeros(features.shape[-1], jnp.float32), jnp.zeros((), jnp.float32))
    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    pred = (features @ params[0] + params[1]) > 0.0
    inter = jnp.sum(pred & (labels > 0.5))
    union = jnp.sum(pred | (labels > 0.5))
    return params[0], params[1], jnp.where(union > 0, inter / jnp.maximum(union, 1), 0.0), losses[-1]


_fit = jax.jit(jax.vmap(_fit_concept, in_axes=(None, 1, None, None)), static_argnums=(2,))


def net2vec(model: Model, dataset: MaskSet, layer: str, quantile: float = QUANTILE,
            units: Sequence[int] | None = None, steps: int = NET2VEC_STEPS, lr: float = NET2VEC_LR,
            batch_size: int = DEFAULT_BATCH) -> Net2Vec:
    """Net2Vec: per concept, weights of the units' binarized maps whose sigmoid best segments the concept.

    The features are the maps of ``dissect`` (upsampled, binarized at T_k); the fit is full-batch over
    every pixel of the set (sets that fit in memory), all concepts at once.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    shape = layer_shape(model, layer)
    if len(shape) != 3:
        raise ValueError(f"layer {layer!r} has no spatial map (shape {shape}); Net2Vec needs a conv layer")
    ids = check_units(units, shape[-1])
    maps = layer_maps(model, pp.to_network(dataset.pixels, model.preprocessing), layer, ids, batch_size)
    thresholds = unit_thresholds(maps, quantile)
    size = tuple(dataset.masks.shape[1:3])
    features = jnp.concatenate([unit_masks(maps[a:a + batch_size], thresholds, size).astype(jnp.float32)
                                for a in range(0, len(maps), batch_size)]).reshape(-1, len(ids))
    labels = jnp.asarray(dataset.masks, jnp.float32).reshape(-1, dataset.masks.shape[-1])
    w, b, iou, loss = jax.device_get(_fit(features, labels, int(steps), float(lr)))
    return Net2Vec(layer, ids, tuple(dataset.concepts), np.asarray(w), np.asarray(b), np.asarray(iou),
                   np.asarray(loss))


def synthetic_mask_set(n: int = 200, seed: int = 0) -> MaskSet:
    """``n`` shipped digits, each with a bright 2x2 dot drawn in an empty corner, and masks of four concepts.

    Strokes are scaled to at most 200 and the dot is 255. ``stroke``: digit pixels >= 128 (of the
    original 255); ``background``: the other pixels off the dot; ``top_half``: rows
    above the middle; ``dot``: the dot. The dot's corner and offset are drawn from ``seed``.
    """
    digits = shipped.reference_digits()[0]
    if not 1 <= n <= len(digits):
        raise ValueError(f"the synthetic set takes 1 to {len(digits)} digits, got {n}")
    digits = digits[:n]
    # Strokes are dimmed to at most STROKE_MAX so the dot is the one brightest thing in an image.
    pixels = np.rint(digits.astype(np.float32) * (STROKE_MAX / 255.0)).astype(np.uint8)
    h, w = pixels.shape[1:]
    rng = np.random.default_rng(seed)
    dot = np.zeros(pixels.shape, bool)
    for i in range(n):
        # Corners of MNIST digits are empty: a dot there never touches the stroke.
        for _ in range(16):
            top = rng.integers(1, 4) if rng.integers(2) else h - DOT - rng.integers(1, 4)
            left = rng.integers(1, 4) if rng.integers(2) else w - DOT - rng.integers(1, 4)
            if pixels[i, top:top + DOT, left:left + DOT].max() < 32:
                break
        dot[i, top:top + DOT, left:left + DOT] = True
    stroke = (digits >= STROKE_LEVEL) & ~dot
    pixels[dot] = 255
    top_half = np.zeros(pixels.shape, bool)
    top_half[:, : h // 2] = True
    masks = np.stack([stroke, ~stroke & ~dot, top_half, dot], axis=-1)
    return MaskSet(pixels, masks, SYNTHETIC_CONCEPTS, tuple(f"digit_{i:04d}" for i in range(n)))


__all__ = ["QUANTILE", "IOU_THRESHOLD", "SYNTHETIC_CONCEPTS", "MaskSet", "Dissection", "layer_maps",
           "unit_thresholds", "unit_masks", "concept_iou", "dissect", "synthetic_mask_set", "Net2Vec", "net2vec",
           "NET2VEC_STEPS", "NET2VEC_LR"]
