"""Top real exemplars: the k images of a set that drive each unit of a layer hardest, all units at once.

Images stream through the network in batches, one jitted forward per batch (the last batch is padded by
repeating its last image, so there is one compilation). A conv unit's value on an image is its maximum
over the map's positions (the first position in row-major order among equal maxima); an fc unit's is its
activation. After every batch the running top-k of every unit is merged with the batch by
``jaxviz.scoring.reference.merge_top_k``, which ranks exactly like one stable sort of all values (higher
first, the earlier image among equal values): the same definition the scorer's path check uses.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.models.model import Model
from jaxviz.scoring.reference import merge_top_k

DEFAULT_K = 9
DEFAULT_BATCH = 50


@dataclasses.dataclass(frozen=True, eq=False)
class Exemplars:
    """Each unit's top-k images of a set, highest first."""

    layer: str
    units: np.ndarray        # (U,) int: the unit (channel) ids, in the order of the rows below
    indices: np.ndarray      # (U, k) int64: image numbers in the set's order
    activations: np.ndarray  # (U, k) float32: the unit's value on that image (max over positions for conv)
    positions: np.ndarray    # (U, k, 2) int32: (row, col) of the max in the map; (-1, -1) for fc layers

    @property
    def k(self) -> int:
        """Exemplars kept per unit (fewer than asked when the set is smaller)."""
        return int(self.indices.shape[1])


def unit_maxima(acts: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per image and unit: the value and (row, col) of the max over positions; fc taps give (-1, -1)."""
    if acts.ndim == 2:
        return acts, jnp.full(acts.shape + (2,), -1, jnp.int32)
    n, h, w, c = acts.shape
    flat = acts.reshape(n, h * w, c)
    where = jnp.argmax(flat, axis=1).astype(jnp.int32)  # first maximum in row-major order
    return flat.max(axis=1), jnp.stack([where // w, where % w], axis=-1)


@functools.lru_cache(maxsize=32)
def _batch_maxima(function, layer: str):
    return jax.jit(lambda params, x: unit_maxima(function(params, x, (layer,))[layer]))


def layer_shape(model: Model, layer: str) -> tuple[int, ...]:
    """Per-image shape of a tap ((h, w, C) or (C,)), without running it; ValueError for an unknown layer."""
    if model.tap_names and layer not in model.tap_names:
        raise ValueError(f"unknown layer {layer!r}; this model's layers: {', '.join(model.tap_names)}")
    shape = jax.eval_shape(lambda p, x: model.apply(p, x, (layer,)), model.params,
                           jax.ShapeDtypeStruct((1, *model.input_shape), np.float32))
    return tuple(int(v) for v in shape[layer].shape[1:])


def layer_units(model: Model, layer: str) -> int:
    """Units (channels) of a layer; ValueError naming the model's taps for an unknown one."""
    return layer_shape(model, layer)[-1]


def check_units(units: Sequence[int] | None, width: int) -> np.ndarray:
    """Unit ids as an int array (all of them for None); IndexError for one outside the layer."""
    if units is None:
        return np.arange(width, dtype=np.int64)
    units = np.asarray(list(units), np.int64)
    bad = units[(units < 0) | (units >= width)]
    if len(bad):
        raise IndexError(f"unit {int(bad[0])} is out of range for a layer with {width} units (0-{width - 1})")
    return units


def top_exemplars(model: Model, images: np.ndarray, layer: str, k: int = DEFAULT_K,
                  batch_size: int = DEFAULT_BATCH, units: Sequence[int] | None = None,
                  first_index: int = 0) -> Exemplars:
    """The top-``k`` of ``images`` (network input, (N, H, W, C)) for every unit of ``layer``.

    ``first_index`` numbers the first image (a chunk of a larger set keeps the set's numbering).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    images = np.asarray(images, np.float32)
    if len(images) == 0:
        raise ValueError("no images to rank")
    ids = check_units(units, layer_units(model, layer))
    run = _batch_maxima(model.function, layer)
    best_v = np.zeros((0, len(ids)), np.float32)
    best_i = np.zeros((0, len(ids)), np.int64)
    best_p = np.zeros((0, len(ids), 2), np.int32)
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        n = len(batch)
        if n < batch_size and len(images) > batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - n, 0)])
        values, where = jax.device_get(run(model.params, batch))
        values, where = np.asarray(values)[:n][:, ids], np.asarray(where)[:n][:, ids]
        rows = np.arange(first_index + start, first_index + start + n, dtype=np.int64)
        best_v, best_i, best_p = merge_top_k(best_v, best_i, values, rows, k, (best_p, where))
    return Exemplars(layer, ids, best_i.T.copy(), best_v.T.copy(), best_p.transpose(1, 0, 2).copy())


def merge_exemplars(parts: Sequence[Exemplars], k: int) -> Exemplars:
    """One ranking from the rankings of consecutive parts of a set (in order): equal to ranking it whole."""
    if not parts:
        raise ValueError("no exemplars to merge")
    first = parts[0]
    best_v, best_i = first.activations.T, first.indices.T
    best_p = first.positions.transpose(1, 0, 2)
    for part in parts[1:]:
        if not np.array_equal(part.units, first.units) or part.layer != first.layer:
            raise ValueError("exemplars of different layers or units cannot be merged")
        # Every image of a part comes after every image of the running top: a batch with its own rows.
        best_v, best_i, best_p = merge_top_k(best_v, best_i, part.activations.T, part.indices.T, k,
                                             (best_p, part.positions.transpose(1, 0, 2)))
    return Exemplars(first.layer, first.units, best_i.T.copy(), best_v.T.copy(), best_p.transpose(1, 0, 2).copy())


__all__ = ["Exemplars", "DEFAULT_K", "DEFAULT_BATCH", "unit_maxima", "layer_shape", "layer_units", "check_units",
           "top_exemplars", "merge_exemplars"]
