"""Inverse sets over many units of a layer: one range [z1, z2], every unit asked, resumable, one gallery.

Each unit's inverse set is a full sampling run (``jaxviz.inverse_set``: seeds by augmented Lagrangian,
then fast rounds), so units run one after another through the same compiled programs rather than in a
``vmap``; the K codes of a round are the batch. A unit is committed by one atomically written ``.npz``
(written after its contact sheet), the same protocol as ``jaxviz.sweep``: a sweep killed at any moment
resumes with the same call, redoes nothing finished, and a folder holding another sweep is refused.
Each unit's key is derived from the sweep seed and the unit id alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Any

import jax
import numpy as np

from jaxviz import inverse_set
from jaxviz.inverse_set import InverseSetResult
from jaxviz.io import gallery, images
from jaxviz.io.atomic import atomic_write_bytes, npz_bytes
from jaxviz.models import preprocessing as pp
from jaxviz.workflows.progress import Progress
from jaxviz.workflows.runfolder import CHUNKS, RESULTS, UNITS_DIR, open_output, write_or_explain
from jaxviz.workflows.sweep import layer_width, model_fingerprint, unit_labels

FORMAT = "jaxviz-inverse-set-sweep/1"


# ----- one inverse set: its contact sheet and folder --------------------------------------------------------

def contact_sheet(result: InverseSetResult, preprocessing: dict | None = None, columns: int = 10,
                  max_images: int = 100, scale: int = 2, title: str | None = None):
    """A PIL contact sheet of up to ``max_images`` samples, evenly spaced in acceptance order, with activations."""
    if len(result.codes) == 0:
        raise ValueError(f"no samples to show: {result.message}")
    pick = np.unique(np.linspace(0, len(result.codes) - 1, min(max_images, len(result.codes))).round().astype(int))
    shown = pp.to_display(result.images[pick], preprocessing)
    caps = [" ".join(f"{v:.3g}" for v in result.activations[i]) for i in pick]
    rows = [list(shown[i:i + columns]) for i in range(0, len(pick), columns)]
    captions = [caps[i:i + columns] for i in range(0, len(pick), columns)]
    if title is None:
        ranges = " & ".join(f"{nm} in [{a:g}, {b:g}]" for nm, a, b in zip(result.names, result.z1, result.z2))
        title = (f"{ranges}: {len(pick)} of {len(result.codes)} samples in acceptance order "
                 f"({result.sampling_rounds} rounds); caption: activation")
    return images.contact_sheet(rows, captions, scale=scale, title=title, font_size=10)


def save_results(result: InverseSetResult, out_dir: str | os.PathLike, preprocessing: dict | None = None,
                 extra: dict | None = None) -> pathlib.Path:
    """Write ``inverse_set.png`` (when there are samples), ``summary.json`` and ``samples.npz`` into ``out_dir``."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(result.codes):
        images.save_png(contact_sheet(result, preprocessing), out / "inverse_set.png")
    summary = {**result.summary(), **(extra or {})}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    np.savez_compressed(out / "samples.npz", codes=result.codes, images=result.images,
                        activations=result.activations, encodings=result.encodings, rounds=result.rounds,
                        order=result.order, lam=result.lam, mu=np.float32(result.mu), z1=result.z1, z2=result.z2)
    return out


# ----- inverse sets over the units of a layer ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InverseSetSweepConfig:
    """What an inverse-set sweep computes: the layer, its units, the range, samples and chains per unit."""

    layer: str
    units: tuple[int, ...]
    z1: float
    z2: float
    n: int = 50
    k: int = 10
    seed: int = 0
    position: str = "center"


def unit_file(out: pathlib.Path, unit: int) -> pathlib.Path:
    """The file that commits one unit's samples."""
    return out / CHUNKS / f"unit_{unit:05d}.npz"


def _unit_row(unit: int, label: str | None, summary: dict, seconds: float) -> dict:
    acts_min, acts_max = summary.get("activation_min") or [None], summary.get("activation_max") or [None]
    return {"unit": unit, "seed": 0, "label": label, "status": summary["status"], "samples": summary["samples"],
            "sampling_rounds": summary["sampling_rounds"], "outer_iterations": summary["outer_iterations"],
            "final_activation": acts_min[0], "best_activation": acts_max[0], "rank": -1,
            "message": summary["message"],
            "steps": summary["sampling_rounds"], "seconds": round(seconds, 2),
            "diversity": summary.get("diversity", {}), "image": f"{UNITS_DIR}/unit_{unit:05d}.png"}


def sweep_inverse_sets(classifier: Any, generator: Any, config: InverseSetSweepConfig, out_dir: str | os.PathLike,
                       *, progress: bool | None = None, max_units: int | None = None) -> list[dict]:
    """Sample the inverse set of every unit in ``config`` into ``out_dir`` (resuming); returns the table rows.

    Gallery tiles show each unit's first sample; "final"/"best" activation are the lowest and highest
    activation among its samples, all inside [z1, z2] by construction (checked by a fresh forward pass).
    """
    if config.z1 > config.z2:
        raise ValueError(f"empty range: z1 = {config.z1} > z2 = {config.z2}")
    width = layer_width(classifier, config.layer)
    for u in config.units:
        if not 0 <= u < width:
            raise IndexError(f"unit {u} is out of range for layer {config.layer!r} with {width} units")
    out = pathlib.Path(out_dir)
    manifest = {"format": FORMAT, **dataclasses.asdict(config), "units": list(config.units),
                "classifier": model_fingerprint(classifier), "generator": model_fingerprint(generator)}
    open_output(out, {**manifest, "chunk_size": 1})
    labels = unit_labels(config.layer, width)
    pre = dict(classifier.metadata.get("preprocessing") or {})
    settings = inverse_set.InverseSetConfig(n=config.n, k=config.k)
    todo = [u for u in config.units if not unit_file(out, u).exists()]
    bar = Progress(len(config.units), len(config.units) - len(todo), enabled=progress)
    for u in todo[:max_units]:
        t0 = time.perf_counter()
        key = jax.random.fold_in(jax.random.key(config.seed), u)
        constraint = inverse_set.Constraint(config.layer, u, config.z1, config.z2, config.position)
        result = inverse_set.sample_inverse_set(classifier, generator, [constraint], key, settings)
        summary = result.summary()
        row = _unit_row(u, labels[u] if labels else None, summary, time.perf_counter() - t0)

        def commit() -> None:
            if len(result.codes):
                images.save_png(pp.to_display(result.images[0], pre), out / row["image"])
                images.save_png(contact_sheet(result, pre), out / UNITS_DIR / f"unit_{u:05d}_set.png")
            atomic_write_bytes(unit_file(out, u), npz_bytes({
                "codes": result.codes, "activations": result.activations, "rounds": result.rounds,
                "row": np.frombuffer(json.dumps(row).encode(), np.uint8)}))
        write_or_explain(f"unit {u}", commit, out)
        bar.update(1)
    bar.close()
    rows = [json.loads(bytes(np.load(unit_file(out, u))["row"]).decode())
            for u in config.units if unit_file(out, u).exists()]
    if len(rows) == len(config.units):
        write_or_explain("the results table and gallery", lambda: _finish(out, rows, config), out)
    return rows


def _finish(out: pathlib.Path, rows: list[dict], config: InverseSetSweepConfig) -> None:
    atomic_write_bytes(out / RESULTS, "".join(json.dumps(r) + "\n" for r in rows).encode())
    tiles = [r for r in rows if r["samples"]]
    sheets = [f"{UNITS_DIR}/unit_{r['unit']:05d}_set.png" for r in tiles]
    section = gallery.Section(
        f"Inverse sets of {config.layer} units: activation in [{config.z1:g}, {config.z2:g}]", tiles, sheets,
        note=f"{len(tiles)} of {len(rows)} units reached the range; {config.n} samples per unit from "
             f"{config.k} chains; tiles show the first sample, act/best the lowest and highest sampled activation")
    gallery.write_gallery(out / "index.html", f"jaxviz inverse sets: {config.layer}", [section])




__all__ = ["InverseSetSweepConfig", "contact_sheet", "save_results", "sweep_inverse_sets", "unit_file"]
