"""``make demo``: an atlas of every output class of the classifier, as a static HTML gallery.

Sweeps every fc8 unit with DGN-AM and with pixel AM under Yosinski et al.'s priors (``jaxviz.sweep``,
resumable: a rerun into the same folder finishes what is missing), inverts held-out digits through the
embedded generator, G(E(x)) (``reconstructions.png``, ``summary.json``), sets each class's synthetic
images beside its top real digits and their DeconvNet projections (``evidence.png``), samples one
inverse set (``inverse_set/``), and writes ``index.html`` that
shows all of it; prints the folder. The embedded MNIST pair by default; converted CaffeNet/generator
weights with ``--classifier DIR --generator DIR`` or ``JAXVIZ_CLASSIFIER`` / ``JAXVIZ_GENERATOR``.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxviz import inverse_set, lenses
from jaxviz.io import gallery, images
from jaxviz.io.atomic import atomic_write_bytes
from jaxviz.models import checkpoint, load, shipped
from jaxviz.models import preprocessing as pp
from jaxviz.models.model import Model
from jaxviz.recipes.generator import reconstruct
from jaxviz.workflows import sweep
from jaxviz.workflows.inverse_sets import check_results_folder, results_job, save_results
from jaxviz.workflows.runfolder import open_job_folder
from jaxviz.workflows.progress import Stage, Stages
from jaxviz.workflows.runfolder import METADATA, RESULTS

PAIRS_PER_ROW = 10
# Steps per run: the embedded pair converges in far fewer steps than CaffeNet (DGN-AM's 200).
EMBEDDED_STEPS = 60
REAL_STEPS = 200
ATLAS_METHODS = (("dgn_am", "DGN-AM (generator code)"),
                 ("pixel", "pixel AM with Yosinski et al. 2015 priors (setting 4, made readable: recipes.pixel_am)"))


def make_inversion(clf: Model, gen: Model):
    """``invert(c_params, g_params, x) -> (crop(G(E(x))), labels of x, labels of G(E(x)))``."""
    rebuild = reconstruct(clf, gen)
    labels = jax.jit(lambda params, x: jnp.argmax(clf.function(params, x, ("fc8",))["fc8"], -1))

    def invert(c_params, g_params, x):
        image = rebuild(c_params, g_params, x)
        return image, labels(c_params, x), labels(c_params, image)

    return invert


def reconstruction_sheet(originals: np.ndarray, reconstructions: np.ndarray, labels: np.ndarray,
                         pred_x: np.ndarray, pred_rec: np.ndarray, preprocessing: dict, title: str):
    """Contact sheet of (original, G(E(x))) pairs captioned with the classifier's labels; red = wrong label."""
    orig = pp.to_display(originals, preprocessing)
    rec = pp.to_display(reconstructions, preprocessing)
    rows, caps, colors = [], [], []
    for start in range(0, len(labels), PAIRS_PER_ROW):
        row, cap, col = [], [], []
        for i in range(start, min(start + PAIRS_PER_ROW, len(labels))):
            row += [orig[i], rec[i]]
            cap += [f"x: {pred_x[i]}", f"G: {pred_rec[i]}"]
            col += ["black" if pred_x[i] == labels[i] else "red",
                    "black" if pred_rec[i] == labels[i] else "red"]
        rows.append(row), caps.append(cap), colors.append(col)
    return images.contact_sheet(rows, caps, caption_colors=colors, scale=2, group=2, group_gap=10, title=title)


def run_reconstructions(out_dir: str | pathlib.Path = "out/demo") -> pathlib.Path:
    """G(E(x)) of the shipped held-out digits into reconstructions.png and summary.json; returns the folder."""
    out = pathlib.Path(out_dir)
    clf, gen = load("caffenet"), load("generator")
    digits, labels = shipped.heldout_digits()
    pre = clf.preprocessing
    x = pp.to_network(digits, pre)
    rec, pred_x, pred_rec = jax.device_get(make_inversion(clf, gen)(clf.params, gen.params, jnp.asarray(x)))
    agreement = float(np.mean(pred_rec == labels))
    title = (f"{len(labels)} held-out MNIST digits x (left of each pair) and their inversions G(E(x)) (right); "
             f"captions: the classifier's label, red where it is not the true label. "
             f"G(E(x)) keeps the label: {np.sum(pred_rec == labels)}/{len(labels)}")
    sheet = reconstruction_sheet(x, rec, labels, pred_x, pred_rec, pre, title)
    images.save_png(sheet, out / "reconstructions.png")
    summary = {"digits": int(len(labels)), "classifier_accuracy": float(np.mean(pred_x == labels)),
               "label_agreement": agreement,
               "agreement_with_classifier_label": float(np.mean(pred_rec == pred_x)),
               "image_mse": float(np.mean(np.square(rec - x))),
               "labels": labels.tolist(), "classifier_labels": pred_x.tolist(),
               "reconstruction_labels": pred_rec.tolist(),
               "models": "embedded default pair (jaxviz/data/embedded, see TRAINING.md there)"}
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    return out


# One inverse set of the embedded pair: inputs the classifier scores in a middle range for digit 3
# (held-out 3s score about 18-22 on this logit), 100 samples from K = 10 chains.
DEMO_INVERSE_SET = ("fc8", 3, 10.0, 15.0)
DEMO_INVERSE_SET_SAMPLES = 100


def run_inverse_set_section(out: pathlib.Path, seed: int = 0) -> "gallery.Section":
    """Sample one inverse set of the embedded pair into ``out/inverse_set``; its gallery section."""
    clf, gen = load("caffenet"), load("generator")
    layer, unit, z1, z2 = DEMO_INVERSE_SET
    config = inverse_set.InverseSetConfig(n=DEMO_INVERSE_SET_SAMPLES)
    constraints = [inverse_set.Constraint(layer, unit, z1, z2)]
    job = results_job(clf, gen, constraints, config, seed)
    check_results_folder(out / "inverse_set", job)  # a rerun replaces the same job's set; others are refused
    t0 = time.perf_counter()
    with Stages(f"demo, inverse set of {layer} unit {unit}: ", unit="") as progress:
        result = inverse_set.sample_inverse_set(clf, gen, constraints, jax.random.key(seed), config,
                                                progress=progress)
    seconds = time.perf_counter() - t0
    save_results(result, out / "inverse_set", clf.preprocessing,
                 {"seconds": round(seconds, 1), "seed": seed}, job=job)
    d = result.diversity
    note = (f"{result.message}, {seconds:.0f} s; mean pairwise distance {d.get('mean_pairwise_distance_E', 0):.3g} in "
            f"E space, {d.get('mean_pairwise_distance_pixels', 0):.3g} in pixels")
    figures = ["inverse_set/inverse_set.png"] if len(result.codes) else []
    return gallery.Section(f"Inverse set of {layer} unit {unit}: inputs with activation in [{z1:g}, {z2:g}] "
                           f"(Hada & Carreira-Perpinan 2019)", [], figures, note=note)


def run_atlas(out_dir: str | os.PathLike = "out/demo", classifier_dir: str | None = None,
              generator_dir: str | None = None, steps: int | None = None,
              progress: bool | None = None) -> tuple[pathlib.Path, dict]:
    """Sweep every fc8 class with each atlas method into ``out_dir/<method>``; returns the folder and figures."""
    out = pathlib.Path(out_dir)
    clf, gen = load("caffenet", classifier_dir), load("generator", generator_dir)
    real = classifier_dir is not None
    steps = (REAL_STEPS if real else EMBEDDED_STEPS) if steps is None else steps
    if steps < 1:
        raise ValueError(f"the demo needs steps >= 1, got {steps}")
    width = sweep.layer_width(clf, "fc8")
    sections, figures = [], {}
    for method, title in ATLAS_METHODS:
        t0 = time.perf_counter()
        s = sweep.sweep(clf, gen, sweep.SweepConfig("fc8", tuple(range(width)), method, steps), out / method,
                        progress=progress)
        rows = [json.loads(line) for line in (out / method / RESULTS).read_text().splitlines()]
        top1 = sum(r.get("scored_rank", r["rank"]) == 0 for r in rows)
        judged = [r for r in rows if r.get("judge_label") is not None]
        agree = sum(r["judge_label"] == r["target_label"] for r in judged)
        flagged = sum(1 for r in rows if r.get("flags"))
        figures[method] = {"units": len(rows), "top1": top1, "judge_agrees": agree if judged else None,
                           "flagged": flagged, "chunk_size": s.chunk_size, "devices": s.devices,
                           # after a resume that computed nothing, the rate the computing run measured
                           "units_per_second": json.loads((out / method / METADATA).read_text())["units_per_second"],
                           "seconds": round(time.perf_counter() - t0, 1)}
        judge = (f"; the independent classifier reads the target class in {agree} of {len(judged)}" if judged
                 else "; no independent classifier named")
        note = (f"{len(rows)} classes, {steps} steps; the target is the top class of its image for {top1} of "
                f"{len(rows)}{judge}; {flagged} flagged; chunk size {s.chunk_size} on {s.devices} device(s)")
        sheets = sorted(p.name for p in (out / method).glob("contact_sheet_*.png"))
        sections.append(gallery.Section(title, rows, sheets, prefix=f"{method}/", note=note))
    return out, {"sections": sections, "figures": figures, "real": real}


EVIDENCE_FILE = "evidence.png"
EVIDENCE_K = 5  # real digits (and their projections) per class


def _unit_pictures(folder: pathlib.Path, size: int) -> dict[int, Image.Image]:
    """Each unit's first-seed tile of a finished sweep folder, back at the network's input size."""
    rows = [json.loads(line) for line in (folder / RESULTS).read_text().splitlines()]
    found = {}
    for row in rows:
        if row.get("seed_index", 0) == 0 and row["unit"] not in found:
            with Image.open(folder / row["image"]) as im:
                found[row["unit"]] = im.convert("L").resize((size, size), Image.NEAREST)
    return found


def run_evidence_section(out: pathlib.Path, clf: Model) -> "gallery.Section":
    """Per fc8 class: the atlas's synthetic images beside the class's top real digits and their DeconvNet
    projections (Zeiler & Fergus), so a picture is read next to the real evidence for the same unit."""
    digits, _ = shipped.reference_digits()
    x = pp.to_network(digits, clf.preprocessing)
    top = lenses.top_exemplars(clf, x, "fc8", k=EVIDENCE_K)
    size = int(clf.input_shape[0])
    synthetic = {m: _unit_pictures(out / m, size) for m, _ in ATLAS_METHODS}
    rows, captions = [], []
    for row, unit in enumerate(np.asarray(top.units)):
        best = [int(i) for i in np.asarray(top.indices[row])]
        maps = [np.asarray(lenses.project(clf, x[i], "fc8", [int(unit)], rule="deconvnet"))[0] for i in best]
        rows.append([synthetic[m][int(unit)] for m, _ in ATLAS_METHODS]
                    + [pp.to_display(x[i], clf.preprocessing) for i in best]
                    + [lenses.projection_display(p, clf.preprocessing) for p in maps])
        captions.append([f"{m} {unit}" for m, _ in ATLAS_METHODS]
                        + [f"real {a:.0f}" for a in np.asarray(top.activations[row])]
                        + ["deconv"] * len(best))
    sheet = images.contact_sheet(rows, captions, scale=3, font_size=11,
                                 title="fc8 classes: synthetic (DGN-AM, pixel AM) | top 5 real digits | "
                                       "their DeconvNet projections")
    images.save_png(sheet, out / EVIDENCE_FILE)
    return gallery.Section("Real evidence beside the synthetic images", [], [EVIDENCE_FILE],
                           note=f"for each class, its top {EVIDENCE_K} of the {len(digits)} held-out reference "
                                f"digits by fc8 activation, and each one's DeconvNet projection of that unit "
                                f"(jaxviz exemplars, jaxviz project)")


DEMO_FORMAT = "jaxviz-demo/1"
# What a demo folder holds; a folder with only these (written before demo manifests existed) is resumed.
DEMO_ENTRIES = ("dgn_am", "pixel", "inverse_set", "index.html", "summary.json", "reconstructions.png", "atlas.json",
                EVIDENCE_FILE)


def open_demo_folder(out_dir: str | os.PathLike, classifier_dir: str | None, generator_dir: str | None,
                     steps: int | None) -> dict:
    """Create or reopen the demo's folder (``runfolder.open_job_folder``): a rerun of the same demo resumes,
    a folder holding anything else (a different demo, a user's files) is refused before any work."""
    def where(folder: str | None) -> str:
        return "embedded" if folder is None else str(pathlib.Path(folder).absolute())
    manifest = {"format": DEMO_FORMAT, "classifier": where(classifier_dir), "generator": where(generator_dir),
                "steps": steps}
    return open_job_folder(pathlib.Path(out_dir), manifest, "demo", adopt=DEMO_ENTRIES)


def run_demo(out_dir: str | os.PathLike = "out/demo", classifier_dir: str | None = None,
         generator_dir: str | None = None, steps: int | None = None) -> pathlib.Path:
    """The whole demo: the fc8 atlas, G(E(x)) and one inverse set (embedded pair), one gallery; prints figures."""
    if (classifier_dir is None) != (generator_dir is None):
        raise ValueError("give both converted folders (classifier and generator) or neither")
    if steps is not None and steps < 1:
        raise ValueError(f"the demo needs steps >= 1, got {steps}")
    for folder in (classifier_dir, generator_dir):  # a missing or wrong model folder before any folder is made
        if folder is not None:
            checkpoint.read_metadata(folder)
    open_demo_folder(out_dir, classifier_dir, generator_dir, steps)
    start = time.perf_counter()
    out, atlas = run_atlas(out_dir, classifier_dir, generator_dir, steps)
    sections = list(atlas["sections"])
    if not atlas["real"]:
        run_reconstructions(out)
        summary = json.loads((out / "summary.json").read_text())
        sections.append(gallery.Section(
            "Generator inversion G(E(x)) of held-out digits", [], ["reconstructions.png"],
            note=f"label kept by G(E(x)): {summary['label_agreement']:.2f}"))
        sections.append(run_evidence_section(out, load("caffenet")))
        sections.append(run_inverse_set_section(out))
    seconds = time.perf_counter() - start
    meta = {m: f"{f['units_per_second']} runs/s (chunk {f['chunk_size']})" for m, f in atlas["figures"].items()}
    meta["wall seconds"] = round(seconds, 1)
    models = "converted CaffeNet + generator" if atlas["real"] else "embedded MNIST pair"
    page = gallery.write_gallery(out / "index.html", f"jaxviz atlas: every fc8 class of the {models}",
                                 sections, meta)
    atomic_write_bytes(out / "atlas.json",
                       json.dumps({**atlas["figures"], "wall_seconds": round(seconds, 1)}, indent=1).encode())
    for method, f in atlas["figures"].items():
        judge = f", judge agrees for {f['judge_agrees']}" if f["judge_agrees"] is not None else ""
        print(f"{method}: {f['units']} classes, target on top for {f['top1']}{judge}, {f['flagged']} flagged, "
              f"{f['units_per_second']} runs/s, chunk size {f['chunk_size']} on {f['devices']} device(s)")
    print(f"done in {seconds:.0f} s; gallery written to {out}/ (open {page} in a browser)")
    return out


__all__ = ["ATLAS_METHODS", "make_inversion", "reconstruction_sheet", "run_atlas", "run_demo",
           "run_inverse_set_section", "run_reconstructions", "run_evidence_section"]
