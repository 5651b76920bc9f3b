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
import io
import json
import os
import pathlib
import shutil
import time
from typing import Any

import jax
import numpy as np

from jaxviz import inverse_set
from jaxviz.inverse_set import InverseSetResult
from jaxviz.io import gallery, images
from jaxviz.io.atomic import atomic_write_bytes, clean_stale, npz_bytes, replace_dir, tmp_path
from jaxviz.models import preprocessing as pp
from jaxviz.models.model import Model
from jaxviz.workflows.progress import Stage, mode_for
from jaxviz.workflows import runfolder
from jaxviz.workflows.runfolder import (CHUNKS, MANIFEST, RESULTS, UNITS_DIR, SweepError, open_output,
                                       write_or_explain)
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


RESULTS_FORMAT = "jaxviz-inverse-set/1"
RESULT_FILES = ("inverse_set.png", "summary.json", "samples.npz")


def results_job(classifier: Model, generator: Model, constraints: Any, config: Any, seed: int) -> dict:
    """What one inverse set's folder records as its job: models, constraints, settings, seed."""
    def plain(value: Any) -> Any:
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return json.loads(json.dumps({"constraints": [plain(c) for c in constraints], "config": plain(config),
                                  "seed": seed, "classifier": model_fingerprint(classifier),
                                  "generator": model_fingerprint(generator)}, default=str))


def check_results_folder(out_dir: str | os.PathLike, job: dict | None = None, force: bool = False) -> str:
    """Whether one inverse set may be written to ``out_dir``: "create", "replace" (the same job's results) or
    "force"; a ``SweepError`` saying how to proceed otherwise. Call it before sampling."""
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SweepError(f"{out} is a file, not a folder; choose another --out")
    if not out.exists():
        return "create"
    try:
        entries = [p.name for p in out.iterdir() if p.name != ".gitkeep"]
    except OSError as err:
        raise SweepError(f"cannot read the folder {out}: {err.strerror or err}") from None
    if not entries:
        return "create"
    manifest = out / MANIFEST
    same = False
    if manifest.is_file() and job is not None:
        try:
            old = json.loads(manifest.read_text())
            same = isinstance(old, dict) and old.get("format") == RESULTS_FORMAT and old.get("job") == job
        except (OSError, ValueError):
            same = False
    ours = {*RESULT_FILES, MANIFEST}
    others = sorted(e for e in entries if e not in ours and not (e.startswith(".") and ".tmp-" in e))
    if same and not others:
        return "replace"
    if force:
        return "force"
    what = (f"other files ({', '.join(others[:5])})" if others else "the results of another inverse set")
    raise SweepError(f"{out} already holds {what}; refusing to overwrite them. Use another --out folder, or pass "
                     f"--force to replace it")


def save_results(result: InverseSetResult, out_dir: str | os.PathLike, preprocessing: dict | None = None,
                 extra: dict | None = None, *, job: dict | None = None, force: bool = False) -> pathlib.Path:
    """Write ``inverse_set.png`` (when there are samples), ``summary.json``, ``samples.npz`` and ``manifest.json``
    (the ``job``) as the folder ``out_dir``.

    The folder is built whole in a temporary sibling and moved into place (``replace_dir``): it never
    mixes two runs' files. An existing folder is replaced only when it holds the same ``job``'s results
    (a rerun) or with ``force``; anything else is refused (``check_results_folder``) and left as it was.
    """
    out = pathlib.Path(out_dir)
    check_results_folder(out, job, force)

    def write() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(out.parent)
        staged = tmp_path(out)
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir()
        try:
            if len(result.codes):
                images.save_png(contact_sheet(result, preprocessing), staged / "inverse_set.png")
            summary = {**result.summary(), **(extra or {})}
            atomic_write_bytes(staged / "summary.json", json.dumps(summary, indent=2).encode())
            buf = io.BytesIO()
            np.savez_compressed(buf, codes=result.codes, images=result.images, activations=result.activations,
                                encodings=result.encodings, rounds=result.rounds, order=result.order, lam=result.lam,
                                mu=np.float32(result.mu), z1=result.z1, z2=result.z2)
            atomic_write_bytes(staged / "samples.npz", buf.getvalue())
            atomic_write_bytes(staged / MANIFEST, json.dumps({"format": RESULTS_FORMAT, "job": job}, indent=1).encode())
            replace_dir(staged, out)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    try:
        write()
    except OSError as err:
        raise SweepError(f"cannot write the inverse set to {out}: {err.strerror or err}; the folder was left as it "
                         f"was") from None
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


def sweep_inverse_sets(classifier: Model, generator: Model, config: InverseSetSweepConfig, out_dir: str | os.PathLike,
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
    job = runfolder.job_id(open_output(out, {**manifest, "chunk_size": 1}))
    labels = unit_labels(config.layer, width)
    pre = dict(classifier.metadata.get("preprocessing") or {})
    settings = inverse_set.InverseSetConfig(n=config.n, k=config.k)
    todo = [u for u in config.units if _unit_row_of(out, u, job, set_aside=True) is None]  # damaged ones redone
    bar = Stage(f"inverse sets of {config.layer} in [{config.z1:g}, {config.z2:g}]", len(config.units), "unit",
                mode=mode_for(progress), initial=len(config.units) - len(todo))
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
            atomic_write_bytes(unit_file(out, u), runfolder.chunk_bytes({
                "codes": result.codes, "activations": result.activations, "rounds": result.rounds,
                "row": np.frombuffer(json.dumps(row).encode(), np.uint8)}, job, u))
        write_or_explain(f"unit {u}", commit, out)
        bar.update(1)
    bar.close()
    rows = [r for r in (_unit_row_of(out, u, job) for u in config.units) if r is not None]
    if len(rows) == len(config.units):
        write_or_explain("the results table and gallery", lambda: _finish(out, rows, config), out)
    return rows


def _unit_row_of(out: pathlib.Path, unit: int, job: str | None = None, set_aside: bool = False) -> dict | None:
    """The table row a committed unit file holds; None when missing or (set aside when asked) damaged."""
    path = unit_file(out, unit)
    if not path.exists():
        return None
    try:
        arrays = runfolder.read_chunk(path, job, unit).arrays
        row = json.loads(bytes(arrays["row"]).decode())
        if not isinstance(row, dict) or row.get("unit") != unit:
            raise SweepError(f"{path} holds the row of unit {row.get('unit') if isinstance(row, dict) else '?'}")
        return row
    except (SweepError, KeyError, ValueError) as err:
        if not set_aside:
            raise SweepError(f"{path} is damaged ({runfolder.shorten(err, 200)}); run the same command again to "
                             f"compute that unit anew") from None
        runfolder.set_aside(path, f"{path} is damaged ({runfolder.shorten(err, 200)})")
        return None


def _finish(out: pathlib.Path, rows: list[dict], config: InverseSetSweepConfig) -> None:
    atomic_write_bytes(out / RESULTS, "".join(json.dumps(r) + "\n" for r in rows).encode())
    tiles = [r for r in rows if r["samples"]]
    sheets = [f"{UNITS_DIR}/unit_{r['unit']:05d}_set.png" for r in tiles]
    section = gallery.Section(
        f"Inverse sets of {config.layer} units: activation in [{config.z1:g}, {config.z2:g}]", tiles, sheets,
        note=f"{len(tiles)} of {len(rows)} units reached the range; {config.n} samples per unit from "
             f"{config.k} chains; tiles show the first sample, act/best the lowest and highest sampled activation")
    gallery.write_gallery(out / "index.html", f"jaxviz inverse sets: {config.layer}", [section])




__all__ = ["InverseSetSweepConfig", "contact_sheet", "save_results", "sweep_inverse_sets", "unit_file",
           "check_results_folder", "results_job", "RESULTS_FORMAT"]
