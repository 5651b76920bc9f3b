"""Reference sets: real inputs in a model's input space, to say what a unit's activation means on real data.

"Activation 37" means little alone; "above 99 % of real digits" means something. A reference set is a
batch of real images already converted by the model's card (``jaxviz.models.preprocessing.to_network``).
The embedded pair's comes with the package (1000 held-out digits that neither the classifier nor the
judge trained on); for any other model, pass a folder of images (``folder_reference``).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from PIL import Image

from jaxviz.core.objectives import Position, unit_values
from jaxviz.models import preprocessing as pp
from jaxviz.models import shipped
from jaxviz.models.model import Model

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
BATCH = 100


@dataclasses.dataclass(frozen=True, eq=False)
class ReferenceSet:
    """Real inputs for a model: ``images`` (N, H, W, C) in its input space, with labels when known."""

    images: np.ndarray                 # network input, float32
    labels: np.ndarray | None = None   # (N,) int class of each image, or None
    source: str = ""                   # where they came from, for reports


def _same_space(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    keys = ("channel_order", "pixel_scale", "mean")
    return all(str(a.get(k)).lower() == str(b.get(k)).lower() for k in keys)


@functools.lru_cache(maxsize=1)
def _embedded_card() -> dict:
    return dict(shipped.embedded_card("caffenet").get("preprocessing") or {})


def embedded_reference(model: Model) -> ReferenceSet | None:
    """The shipped held-out digits, for a model that takes the embedded pair's input (else None)."""
    if tuple(model.input_shape) != (28, 28, 1) or not _same_space(model.preprocessing, _embedded_card()):
        return None
    digits, labels = shipped.reference_digits()
    return ReferenceSet(pp.to_network(digits, model.preprocessing), labels,
                        f"{len(labels)} held-out MNIST digits shipped with jaxviz")


def load_image(path: pathlib.Path, model: Model) -> np.ndarray:
    """One image file as the model's display-space input: centre-cropped square, resized, gray or RGB."""
    h, w = model.input_shape[:2]
    gray = str(model.preprocessing.get("channel_order", "BGR")).lower() == "gray"
    with Image.open(path) as im:
        im = im.convert("L" if gray else "RGB")
        side = min(im.size)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((w, h), Image.BILINEAR)
        return np.asarray(im, np.uint8)


def folder_reference(folder: str | pathlib.Path, model: Model, limit: int = 1000) -> ReferenceSet:
    """Up to ``limit`` images of a folder (sorted by name), converted for ``model``; a clear error if none."""
    root = pathlib.Path(folder)
    if not root.is_dir():
        raise ValueError(f"reference folder {root} does not exist or is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise ValueError(f"reference folder {root} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    pixels = np.stack([load_image(p, model) for p in files])
    return ReferenceSet(pp.to_network(pixels, model.preprocessing), None, f"{len(files)} images from {root}")


def reference_for(model: Model, folder: str | pathlib.Path | None = None) -> ReferenceSet | None:
    """The folder's images when given, else the shipped digits when they fit the model, else None."""
    return folder_reference(folder, model) if folder is not None else embedded_reference(model)


@functools.lru_cache(maxsize=32)
def _forward(function: Any, taps: tuple[str, ...]):
    return jax.jit(lambda params, x: {t: function(params, x, taps)[t] for t in taps})


def activations(model: Model, images: np.ndarray, taps: Sequence[str], batch: int = BATCH) -> dict[str, np.ndarray]:
    """The taps' activations of ``images``, in batches of ``batch`` (the last padded, so one compilation)."""
    taps = tuple(sorted(set(taps)))
    run = _forward(model.function, taps)
    parts: dict[str, list[np.ndarray]] = {t: [] for t in taps}
    for i in range(0, len(images), batch):
        chunk = np.asarray(images[i:i + batch], np.float32)
        n = len(chunk)
        if n < batch and len(images) > batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, 0)])
        out = jax.device_get(run(model.params, chunk))
        for t in taps:
            parts[t].append(np.asarray(out[t])[:n])
    return {t: np.concatenate(v) for t, v in parts.items()}


def top_k_rows(values: np.ndarray, k: int) -> np.ndarray:
    """(k', U) row indices of each column's ``k`` largest values (k' = min(k, N)), highest first.

    Ties go to the lower row, as a stable sort of ``-values`` orders them; this is the one definition of a
    unit's top real exemplars (the scorer's path check and ``jaxviz.lenses.top_exemplars`` both use it).
    """
    values = np.asarray(values)
    if values.ndim == 1:
        return top_k_rows(values[:, None], k)[:, 0]
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return np.argsort(-values, axis=0, kind="stable")[:k]


def merge_top_k(best_values: np.ndarray, best_rows: np.ndarray, values: np.ndarray, rows: np.ndarray,
                k: int, *extra: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Fold a batch into a running per-column top-k: the top-k of the union, as ``top_k_rows`` ranks it.

    ``best_values``/``best_rows``: (k0, U) the running top (rows increasing among equal values);
    ``values``: (B, U) the batch; ``rows``: (B,) its global row numbers, or (B, U) per column (another
    running top), all larger than any seen before (so a stable sort of the concatenation breaks ties by
    row, exactly as one sort of everything would).
    ``extra``: pairs (running, batch) of per-entry arrays carried along (positions), shapes (k0, U, ...)
    and (B, U, ...). Returns (values, rows, *extra) of the merged top, (min(k, k0 + B), U, ...).
    """
    values, rows = np.asarray(values), np.asarray(rows)
    all_values = np.concatenate([best_values, values], axis=0)
    all_rows = np.concatenate([best_rows, np.broadcast_to(rows[:, None] if rows.ndim == 1 else rows, values.shape)], axis=0)
    order = top_k_rows(all_values, k)
    pick = lambda a: np.take_along_axis(a, order.reshape(order.shape + (1,) * (a.ndim - 2)), axis=0)
    merged = [pick(all_values), pick(all_rows)]
    merged += [pick(np.concatenate([mine, theirs], axis=0)) for mine, theirs in extra]
    return tuple(merged)


def unit_table(acts: Mapping[str, np.ndarray], layer: str, position: Position) -> np.ndarray:
    """(N, units) values of ``layer`` read at ``position``, as objectives read them."""
    return np.asarray(unit_values({layer: np.asarray(acts[layer])}, layer, position))


def channel_features(a: np.ndarray) -> np.ndarray:
    """(N, features): fc layers as they are, conv maps averaged over space (positions do not align)."""
    a = np.asarray(a, np.float32)
    return a.mean(axis=(1, 2)) if a.ndim == 4 else a.reshape(len(a), -1)


__all__ = ["ReferenceSet", "embedded_reference", "folder_reference", "reference_for", "load_image",
           "activations", "unit_table", "channel_features", "top_k_rows", "merge_top_k"]
