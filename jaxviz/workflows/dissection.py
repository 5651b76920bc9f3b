"""Network dissection as a folder job: a labelled mask folder in, a table, a figure and a page out.

The mask folder format (``jaxviz-masks/1``, Broden-like, one binary PNG per image and concept)::

    concepts.json              {"format": "jaxviz-masks/1", "concepts": ["stroke", "background", ...]}
    images/NAME.png            an image (png or jpg; any size)
    masks/NAME/CONCEPT.png     its mask of CONCEPT, the image's size: nonzero = in the concept;
                               a missing file means the concept is absent from that image

Images are brought to the model's input size as every image of jaxviz is (centre square crop, resize,
``jaxviz.scoring.reference.load_image``); masks get the same crop and a nearest-neighbour resize, so all
masks of a set share the input size and the activation maps are upsampled to it.
``write_synthetic_mask_folder`` writes the synthetic digit set (``jaxviz.lenses.dissection``) in it.

A job folder holds ``manifest.json`` (model, layer, set, quantile: another job's folder is refused),
``dissection.csv`` and ``results.jsonl`` (unit, best concept, IoU, detector, threshold),
``dissection.npz`` (units, concepts, thresholds, the full IoU table), ``dissection.png`` (the best
units' binarized maps, red, over the images where they overlap their concept, green) and ``index.html``;
with ``combinations``, also ``net2vec.csv`` and ``net2vec.npz`` (Net2Vec's per-concept unit weights).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image

from jaxviz.io.atomic import atomic_write_bytes, npz_bytes
from jaxviz.io.images import contact_sheet, png_bytes
from jaxviz.io.tables import csv_bytes, jsonl_bytes, write_table_page
from jaxviz.lenses.dissection import (DEFAULT_BATCH, IOU_THRESHOLD, QUANTILE, Dissection, MaskSet, dissect,
                                      layer_maps, net2vec, synthetic_mask_set, unit_masks)
from jaxviz.models import preprocessing as pp
from jaxviz.models.model import Model
from jaxviz.scoring.reference import IMAGE_SUFFIXES, load_image
from jaxviz.workflows import runfolder
from jaxviz.workflows.runfolder import RESULTS, write_or_explain
from jaxviz.workflows.sweep import model_fingerprint

MASK_FORMAT = "jaxviz-masks/1"
FORMAT = "jaxviz-dissection/1"
CONCEPTS_FILE = "concepts.json"
TABLE_COLUMNS = ("unit", "concept", "iou", "detector", "threshold")
FIGURE = "dissection.png"
FIGURE_UNITS = 8      # units shown in the figure (highest IoU first)
FIGURE_IMAGES = 4     # images per unit in the figure


def write_mask_folder(folder: str | os.PathLike, masks: MaskSet) -> pathlib.Path:
    """Write a ``MaskSet`` in the mask folder format (every file atomically); returns the folder."""
    root = pathlib.Path(folder)
    names = masks.names or tuple(f"image_{i:05d}" for i in range(len(masks.pixels)))
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (root / "masks" / name).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(root / "images" / f"{name}.png", png_bytes(masks.pixels[i]))
        for c, concept in enumerate(masks.concepts):
            if masks.masks[i, ..., c].any():
                atomic_write_bytes(root / "masks" / name / f"{concept}.png",
                                   png_bytes(masks.masks[i, ..., c].astype(np.uint8) * 255))
    atomic_write_bytes(root / CONCEPTS_FILE, json.dumps({"format": MASK_FORMAT,
                                                         "concepts": list(masks.concepts)}, indent=1).encode())
    return root


def write_synthetic_mask_folder(folder: str | os.PathLike, n: int = 200, seed: int = 0) -> pathlib.Path:
    """The synthetic digit set (``synthetic_mask_set``) written as a mask folder."""
    return write_mask_folder(folder, synthetic_mask_set(n, seed))


def _square_crop(im: Image.Image) -> Image.Image:
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    return im.crop((left, top, left + side, top + side))


def read_mask_folder(folder: str | os.PathLike, model: Model) -> MaskSet:
    """A mask folder as a ``MaskSet`` at the model's input size; ValueError naming what is wrong."""
    root = pathlib.Path(folder)
    if not root.is_dir():
        raise ValueError(f"mask folder {root} does not exist or is not a folder (argument --masks)")
    try:
        card = json.loads((root / CONCEPTS_FILE).read_text())
        concepts = tuple(str(c) for c in card["concepts"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{root / CONCEPTS_FILE} is missing or does not list concepts "
                         f"({{\"format\": \"{MASK_FORMAT}\", \"concepts\": [...]}}) (argument --masks)") from None
    if not concepts or len(set(concepts)) != len(concepts):
        raise ValueError(f"{root / CONCEPTS_FILE} must name at least one concept, each once (argument --masks)")
    files = sorted(p for p in (root / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"mask folder {root} holds no image under images/ (argument --masks)")
    h, w = model.input_shape[:2]
    pixels, stacks = [], []
    for path in files:
        pixels.append(load_image(path, model))
        with Image.open(path) as im:
            size = im.size
        layers = []
        for concept in concepts:
            mask_path = root / "masks" / path.stem / f"{concept}.png"
            if not mask_path.exists():
                layers.append(np.zeros((h, w), bool))
                continue
            with Image.open(mask_path) as m:
                if m.size != size:
                    raise ValueError(f"{mask_path} is {m.size[0]}x{m.size[1]}, its image {size[0]}x{size[1]}; a "
                                     f"mask must have its image's size (argument --masks)")
                m = _square_crop(m.convert("L")).resize((w, h), Image.NEAREST)
                layers.append(np.asarray(m) > 0)
        stacks.append(np.stack(layers, axis=-1))
    return MaskSet(np.stack(pixels), np.stack(stacks), concepts, tuple(p.stem for p in files))


def mask_set_identity(masks: MaskSet) -> dict:
    """What a job's manifest records of its set: size, concepts and a hash of pixels and masks."""
    digest = hashlib.sha256(np.ascontiguousarray(masks.pixels).tobytes())
    digest.update(np.packbits(np.ascontiguousarray(masks.masks)).tobytes())
    return {"images": len(masks.pixels), "concepts": list(masks.concepts), "sha256": digest.hexdigest()}


def dissection_figure(model: Model, masks: MaskSet, result: Dissection, units: int = FIGURE_UNITS,
                      images: int = FIGURE_IMAGES) -> Image.Image:
    """The best units (by IoU), each over the images where its mask overlaps its concept most."""
    order = np.argsort(-result.best_iou, kind="stable")[:units]
    x = pp.to_network(masks.pixels, model.preprocessing)
    maps = layer_maps(model, x, result.layer, result.units[order])
    on = np.asarray(unit_masks(maps, result.thresholds[order], masks.masks.shape[1:3]))
    rows, caps = [], []
    for j, r in enumerate(order):
        concept = masks.masks[..., int(result.best[r])]
        overlap = (on[..., j] & concept).sum(axis=(1, 2))
        picks = np.argsort(-overlap, kind="stable")[:images]
        row = []
        for i in picks:
            gray = masks.pixels[i] if masks.pixels.ndim == 3 else masks.pixels[i].mean(-1).astype(np.uint8)
            rgb = np.repeat(gray[..., None] // 2, 3, -1)
            rgb[..., 1] = np.where(concept[i], 160, rgb[..., 1])
            rgb[..., 0] = np.where(on[i, ..., j], 255, rgb[..., 0])
            row.append(rgb.astype(np.uint8))
        rows.append(row)
        caps.append([f"u{int(result.units[r])} {result.concepts[int(result.best[r])]} {result.best_iou[r]:.2f}"]
                    + [""] * (len(row) - 1))
    return contact_sheet(rows, caps, scale=max(1, 64 // masks.masks.shape[1]), font_size=10)


def run_dissection(model: Model, masks: MaskSet, layer: str, out_dir: str | os.PathLike,
                   quantile: float = QUANTILE, iou_threshold: float = IOU_THRESHOLD,
                   units: Sequence[int] | None = None, batch_size: int = DEFAULT_BATCH,
                   combinations: bool = False) -> Dissection:
    """Dissect ``layer`` on ``masks`` and write the job folder (a folder of another job is refused).

    ``combinations``: also fit Net2Vec's unit combination per concept (``net2vec.csv``, ``net2vec.npz``).
    """
    out = pathlib.Path(out_dir)
    result_units = None if units is None else [int(u) for u in units]
    manifest = {"format": FORMAT, "layer": layer, "units": result_units, "quantile": float(quantile),
                "iou_threshold": float(iou_threshold), "set": mask_set_identity(masks), "net2vec": bool(combinations),
                "model": model_fingerprint(model)}
    # The arguments are checked (layer, units, conv map) before the folder is opened, by dissecting first.
    result = dissect(model, masks, layer, quantile, iou_threshold, units, batch_size)
    combined = net2vec(model, masks, layer, quantile, units, batch_size=batch_size) if combinations else None
    runfolder.open_job_folder(out, manifest, "dissection")
    rows = result.rows()

    def write() -> None:
        atomic_write_bytes(out / "dissection.csv", csv_bytes(TABLE_COLUMNS, rows))
        atomic_write_bytes(out / RESULTS, jsonl_bytes(rows))
        atomic_write_bytes(out / "dissection.npz", npz_bytes({
            "units": result.units, "concepts": np.asarray(result.concepts), "thresholds": result.thresholds,
            "iou": result.iou}))
        atomic_write_bytes(out / FIGURE, png_bytes(dissection_figure(model, masks, result)))
        if combined is not None:
            n2v_rows = [{**r, "best_single_iou": float(result.iou[:, i].max())} for i, r in enumerate(combined.rows())]
            atomic_write_bytes(out / "net2vec.csv", csv_bytes(("concept", "iou", "best_single_iou", "top_units"),
                                                              n2v_rows))
            atomic_write_bytes(out / "net2vec.npz", npz_bytes({
                "units": combined.units, "concepts": np.asarray(combined.concepts), "weights": combined.weights,
                "bias": combined.bias, "iou": combined.iou}))
        detectors = int(result.detector.sum())
        write_table_page(out / "index.html", f"Network dissection of {layer}", TABLE_COLUMNS, rows,
                         note=f"{len(masks.pixels)} images, concepts {', '.join(result.concepts)}; threshold "
                              f"P(a > T) = {quantile:g}, detector when IoU > {iou_threshold:g}: {detectors} of "
                              f"{len(rows)} units. Figure: unit mask red, concept green",
                         figures=(FIGURE,))
    write_or_explain("the dissection outputs", write, out)
    return result


__all__ = ["MASK_FORMAT", "FORMAT", "CONCEPTS_FILE", "TABLE_COLUMNS", "FIGURE", "write_mask_folder",
           "write_synthetic_mask_folder", "read_mask_folder", "mask_set_identity", "dissection_figure",
           "run_dissection"]
