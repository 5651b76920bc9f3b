"""Top real exemplars of a layer as a resumable folder job: chunks of images, one manifest, one gallery page.

The set's images (a folder's, sorted by name, or the shipped held-out digits) are cut into chunks of
``chunk_images``; each chunk's per-unit top-k (``jaxviz.lenses.top_exemplars``, batches of
``batch_size``) is committed as one self-verifying chunk file (``jaxviz.workflows.runfolder``). When
every chunk is in, the chunks are merged in order (``merge_exemplars``, exact: the global top-k of a unit
lies in the union of its chunks' top-k) and the outputs are written:

- ``exemplars.npz``: ``units`` (U,), ``indices`` / ``activations`` (U, k), ``positions`` (U, k, 2)
  (row, col of the max in the map; -1 for fc), ``boxes`` (U, k, 4) input crops (top, left, bottom,
  right; bottom/right exclusive, clipped to the image), ``names`` (N,) the images in the set's order;
- ``units/unit_NNNNN.png``: the unit's k receptive-field crops, best first, left to right;
- ``results.jsonl``: one row per unit (the same numbers, with the image names and the strip's path);
- ``index.html``: a table of the strips.

The chunk boundaries and batch size are part of the job (the manifest), so a resumed run computes every
chunk exactly as an uninterrupted one does and gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import time
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from jaxviz.io.atomic import atomic_write_bytes, npz_bytes
from jaxviz.io.images import png_bytes
from jaxviz.io.tables import jsonl_bytes, write_table_page
from jaxviz.lenses.exemplars import DEFAULT_BATCH, DEFAULT_K, Exemplars, check_units, layer_units, merge_exemplars, top_exemplars
from jaxviz.lenses.receptive import crop_boxes, padded_crop
from jaxviz.models import preprocessing as pp
from jaxviz.models import shipped
from jaxviz.models.model import Model
from jaxviz.scoring.reference import IMAGE_SUFFIXES, load_image
from jaxviz.workflows import runfolder
from jaxviz.workflows.progress import Stage, mode_for
from jaxviz.workflows.runfolder import CHUNKS, RESULTS, UNITS_DIR, SweepError, chunk_path, write_or_explain
from jaxviz.workflows.sweep import model_fingerprint

FORMAT = "jaxviz-exemplars/1"
EXEMPLARS_FILE = "exemplars.npz"
INDEX = "index.html"
CHUNK_BATCHES = 4       # batches per chunk file by default
STRIP_HEIGHT = 64       # strips are enlarged (nearest neighbour) to at least this many pixels high


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """An ordered set of display-space images (uint8, (H, W) gray or (H, W, 3) RGB), read a slice at a time."""

    names: tuple[str, ...]              # one per image, in the set's order
    identity: dict                      # what a folder's manifest records of the set (its content hash)
    read: Callable[[int, int], np.ndarray]  # (start, stop) -> those images, stacked

    def __len__(self) -> int:
        return len(self.names)


def digits_source(limit: int | None = None) -> ImageSource:
    """The shipped held-out digits (1000 28x28 gray MNIST images), the first ``limit`` of them."""
    digits = shipped.reference_digits()[0]
    digits = digits[:limit] if limit is not None else digits
    digest = hashlib.sha256(np.ascontiguousarray(digits).tobytes()).hexdigest()
    return ImageSource(tuple(f"digit_{i:04d}" for i in range(len(digits))),
                       {"kind": "digits", "count": len(digits), "sha256": digest},
                       lambda a, b: digits[a:b])


def folder_source(folder: str | os.PathLike, model: Model, limit: int | None = None) -> ImageSource:
    """The images of a folder (recursively, sorted by path), brought to the model's input size by its card."""
    root = pathlib.Path(folder)
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist or is not a folder (argument --images)")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    files = files[:limit] if limit is not None else files
    if not files:
        raise ValueError(f"image folder {root} holds no image ({', '.join(IMAGE_SUFFIXES)}) (argument --images)")
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(p.read_bytes()).digest())
    names = tuple(str(p.relative_to(root)) for p in files)

    def read(a: int, b: int) -> np.ndarray:
        return np.stack([load_image(p, model) for p in files[a:b]])
    return ImageSource(names, {"kind": "folder", "count": len(files), "sha256": digest.hexdigest()}, read)


def source_for(model: Model, folder: str | os.PathLike | None = None, limit: int | None = None) -> ImageSource:
    """A folder's images when given, else the shipped digits when the model takes 28x28 gray input."""
    if folder is not None:
        return folder_source(folder, model, limit)
    gray = str(model.preprocessing.get("channel_order", "")).lower() == "gray"
    if tuple(model.input_shape) != (28, 28, 1) or not gray:
        raise ValueError(f"the shipped digits are 28x28 gray, this model takes {model.input_shape}; pass a "
                         f"folder of images (argument --images)")
    return digits_source(limit)


@dataclasses.dataclass
class ExemplarsRun:
    """What a run did: its folder, chunks in all and computed now, and whether the outputs are written."""

    out_dir: pathlib.Path
    chunks: int
    computed: int
    finished: bool
    seconds: float


def run_exemplars(model: Model, source: ImageSource | str | os.PathLike | None, layer: str, out_dir: str | os.PathLike, k: int = DEFAULT_K,
                  units: Sequence[int] | None = None, batch_size: int = DEFAULT_BATCH,
                  chunk_images: int | None = None, max_chunks: int | None = None,
                  progress: bool | None = None) -> ExemplarsRun:
    """Compute (or resume) the top-``k`` exemplars of ``layer``'s units over ``source`` into ``out_dir``.

    ``chunk_images``: images per chunk file (default ``CHUNK_BATCHES`` batches; a multiple of
    ``batch_size`` keeps the batches of a chunk aligned); ``max_chunks`` stops after computing that many
    (a rerun resumes). A folder holding another job is refused (``SweepError``). ``source``: an
    ``ImageSource``, a folder of images, or None for the shipped digits.
    """
    out = pathlib.Path(out_dir)
    if not isinstance(source, ImageSource):
        source = source_for(model, source)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k} (argument --k)")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size} (argument --batch-size)")
    chunk_images = batch_size * CHUNK_BATCHES if chunk_images is None else chunk_images
    if chunk_images < 1:
        raise ValueError(f"chunk_images must be at least 1, got {chunk_images}")
    if max_chunks is not None and max_chunks < 0:
        raise ValueError(f"max_chunks must be >= 0 (or None: all), got {max_chunks}")
    ids = check_units(units, layer_units(model, layer))  # an unknown layer or unit is named before any write
    manifest = {"format": FORMAT, "layer": layer, "units": [int(u) for u in ids], "k": int(k),
                "batch_size": int(batch_size), "chunk_images": int(chunk_images), "source": dict(source.identity),
                "model": model_fingerprint(model), "preprocessing": dict(model.preprocessing)}
    manifest = runfolder.open_job_folder(out, manifest, "exemplars job")
    write_or_explain("the job's folders", lambda: [(out / d).mkdir(exist_ok=True) for d in (CHUNKS, UNITS_DIR)], out)
    runfolder.clean_stale_claims(out)
    job = runfolder.job_id(manifest)
    n_chunks = -(-len(source) // chunk_images)
    runfolder.warn_stray_chunks(out, n_chunks)
    todo = runfolder.pending_chunks(out, job, range(n_chunks), lambda c: (ids, None))
    t0, computed = time.perf_counter(), 0
    with Stage(f"exemplars {layer}", n_chunks, "chunk", mode=mode_for(progress), initial=n_chunks - len(todo)) as stage:
        for c in todo:
            if max_chunks is not None and computed >= max_chunks:
                break
            claim = runfolder.claim_path(out, c)
            if write_or_explain(f"the claim of chunk {c}", lambda: runfolder.try_claim(claim), out) is not None:
                continue  # another live process computes it
            try:
                if not chunk_path(out, c).exists():
                    _compute_chunk(model, source, layer, ids, k, batch_size, chunk_images, out, job, c)
                    computed += 1
                    stage.update()
            finally:
                runfolder.release_claim(claim)
    finished = all(chunk_path(out, c).exists() for c in range(n_chunks))
    if finished:
        chunks = runfolder.load_chunk_files(out, n_chunks, job, lambda c: (ids, None))
        parts = [Exemplars(layer, ch.arrays["unit"], ch.arrays["index"], ch.arrays["value"], ch.arrays["position"])
                 for ch in chunks]
        merged = merge_exemplars(parts, k)
        write_or_explain("the exemplar outputs", lambda: write_outputs(out, model, source, merged), out)
    return ExemplarsRun(out, n_chunks, computed, finished, time.perf_counter() - t0)


def _compute_chunk(model: Model, source: ImageSource, layer: str, ids: np.ndarray, k: int, batch_size: int,
                   chunk_images: int, out: pathlib.Path, job: str, c: int) -> None:
    lo, hi = c * chunk_images, min((c + 1) * chunk_images, len(source))
    images = pp.to_network(source.read(lo, hi), model.preprocessing)
    part = top_exemplars(model, images, layer, k, batch_size, ids, first_index=lo)
    arrays = {"unit": ids, "index": part.indices, "value": part.activations, "position": part.positions}
    write_or_explain(f"chunk {c}", lambda: atomic_write_bytes(chunk_path(out, c), runfolder.chunk_bytes(arrays, job, c)),
                     out)


def unit_strip(crops: Sequence[np.ndarray], height: int = STRIP_HEIGHT) -> np.ndarray:
    """Crops side by side (RGB, 2 px white gaps), each resized to the largest one, enlarged to ``height``."""
    side_h = max(c.shape[0] for c in crops)
    side_w = max(c.shape[1] for c in crops)
    scale = max(1, -(-height // side_h))
    tiles = []
    for crop in crops:
        rgb = np.repeat(crop[..., None], 3, -1) if crop.ndim == 2 else crop[..., :3]
        im = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
        tiles.append(np.asarray(im.resize((side_w * scale, side_h * scale), Image.NEAREST)))
    gap = np.full((side_h * scale, 2, 3), 255, np.uint8)
    return np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)


def strip_name(unit: int) -> str:
    """The strip file of a unit, relative to the job folder."""
    return f"{UNITS_DIR}/unit_{unit:05d}.png"


def write_outputs(out: pathlib.Path, model: Model, source: ImageSource, ex: Exemplars) -> None:
    """``exemplars.npz``, the unit strips, ``results.jsonl`` and ``index.html`` of a finished job."""
    boxes = crop_boxes(model, ex.layer, ex.positions)
    full = crop_boxes(model, ex.layer, ex.positions, clip=False)  # strips show the whole field, padding grey
    pixels = {int(i): source.read(int(i), int(i) + 1)[0] for i in np.unique(ex.indices)}
    rows = []
    for r, unit in enumerate(ex.units):
        crops = [padded_crop(pixels[int(i)], full[r, j]) for j, i in enumerate(ex.indices[r])]
        atomic_write_bytes(out / strip_name(int(unit)), png_bytes(unit_strip(crops)))
        rows.append({"unit": int(unit), "strip": strip_name(int(unit)),
                     "top_activation": float(ex.activations[r, 0]),
                     "indices": [int(v) for v in ex.indices[r]],
                     "names": [source.names[int(v)] for v in ex.indices[r]],
                     "activations": [float(v) for v in ex.activations[r]],
                     "positions": ex.positions[r].tolist(), "boxes": boxes[r].tolist()})
    atomic_write_bytes(out / EXEMPLARS_FILE, npz_bytes({
        "units": ex.units, "indices": ex.indices, "activations": ex.activations, "positions": ex.positions,
        "boxes": boxes, "names": np.asarray(source.names)}))
    atomic_write_bytes(out / RESULTS, jsonl_bytes(rows))
    write_table_page(out / INDEX, f"Top {ex.k} real exemplars of {ex.layer}", ("unit", "top_activation", "strip"),
                     rows, image_columns=("strip",),
                     note=f"{len(source)} images; each strip shows a unit's top {ex.k} images, best first, cropped "
                          f"to the receptive field of the position of its maximum (grey: outside the image)")


def load_exemplars(out_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a finished job's ``exemplars.npz``."""
    with np.load(pathlib.Path(out_dir) / EXEMPLARS_FILE, allow_pickle=False) as z:
        return {name: z[name] for name in z.files}


__all__ = ["FORMAT", "EXEMPLARS_FILE", "INDEX", "CHUNK_BATCHES", "ImageSource", "digits_source", "folder_source",
           "source_for", "ExemplarsRun", "run_exemplars", "unit_strip", "strip_name", "write_outputs",
           "load_exemplars", "SweepError"]
