"""Sweeps: every unit of a layer in one compiled, sharded, resumable run, written out as a browsable atlas.

A sweep is the list of runs ``(unit, seed index)`` in order, cut into chunks of ``chunk_size`` runs. Every
chunk runs through the *same* compiled ``vmap`` program (the short last chunk is padded by repeating its
last run and the padding is dropped), sharded over the batch axis across the local devices with a
``jax.sharding.Mesh``. A run's PRNG key depends only on its unit and seed index (``unit_keys``), and chunk
boundaries are fixed by the manifest, so a resumed sweep recomputes nothing finished and gives the same
bits as an uninterrupted one.

Each finished chunk is one ``.npz`` file written atomically (temporary file in the same folder, fsync,
``os.replace``). That is used rather than orbax because a chunk is a handful of small host arrays written
once and never updated: one POSIX rename is the whole commit protocol, there is no background thread to
outlive a SIGKILL, and no commit marker that records the machine's absolute path.

Multi-host (``jax.distributed.initialize()`` on every host before calling ``sweep``): every process
takes the chunks ``i`` with ``i % process_count == process_index`` and shards them over its own local
devices; the output folder must be shared (NFS, GCS fuse). Process 0 writes the table and gallery after
a barrier.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import time
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from jaxviz.core.loop import compiled_run
from jaxviz.core.run import check_setup, unit_keys
from jaxviz.io import gallery
from jaxviz.io.atomic import atomic_write_bytes, npy_bytes, npz_bytes
from jaxviz.io.images import png_bytes
from jaxviz.models import preprocessing as pp
from jaxviz.models import shipped
from jaxviz.models.model import Model
from jaxviz.recipes import registry
from jaxviz.scoring import Report, Scorer, default_scorer
from jaxviz.workflows import runfolder
from jaxviz.workflows.devices import (batch_mesh, chunk_size_problem, default_chunk_size, device_memory_bytes,
                                      estimate_run_bytes, is_out_of_memory, step_memory)
from jaxviz.workflows.progress import Stage, mode_for
from jaxviz.workflows.runfolder import (CHUNKS, MANIFEST, METADATA, RESULTS, UNITS_DIR, SweepError, chunk_path,
                                       open_output, write_or_explain)

FORMAT = "jaxviz-sweep/1"
METHODS = tuple(registry.METHODS)  # the registry's methods, each run per unit


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """What a sweep computes; everything but ``chunk_size`` identifies its results."""

    layer: str
    units: tuple[int, ...]
    method: str = "dgn_am"
    steps: int | None = None       # None: the method's own (recipes.registry.default_steps), recorded as such
    seeds_per_unit: int = 1
    seed: int = 0
    chunk_size: int | None = None  # None: chosen from the device memory
    objective: str = "auto"  # a name of recipes.registry.OBJECTIVE_NAMES (auto: the method's default)

    def identity(self) -> dict:
        """The fields a folder's results must match to be resumed."""
        ident = {"layer": self.layer, "units": list(self.units), "method": self.method, "steps": self.steps,
                 "seeds_per_unit": self.seeds_per_unit, "seed": self.seed}
        # auto and pre (what auto always meant before dgn_am's tempered default, which sweep() records as
        # auto_objective) are not recorded, so folders written before the option existed still resume.
        return ident if self.objective in ("auto", "pre") else {**ident, "objective": self.objective}


# ----- units and labels -------------------------------------------------------------------------------

def parse_units(spec: str | int | Sequence[int], width: int) -> tuple[int, ...]:
    """``"all"``, ``"0-9,42"``, ``"5"`` or a list of ints -> unit ids, checked against the layer width."""
    if isinstance(spec, str):
        units: list[int] = []
        text = spec.strip().lower()
        if text == "all":
            units = list(range(width))
        else:
            for part in filter(None, (p.strip() for p in text.split(","))):
                lo, sep, hi = part.partition("-")
                try:
                    units += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
                except ValueError:
                    raise ValueError(f"unit spec {spec!r}: expected 'all', ids and ranges like '0-9,42'") from None
    else:
        units = [int(u) for u in np.atleast_1d(np.asarray(spec)).ravel()]
    if not units:
        raise ValueError(f"unit spec {spec!r} names no unit")
    for u in units:
        if not 0 <= u < width:
            raise IndexError(f"unit {u} is out of range for a layer with {width} units (0-{width - 1})")
    if len(set(units)) != len(units):
        raise ValueError(f"unit spec {spec!r} names some units twice")
    return tuple(units)


def unit_labels(layer: str, width: int) -> list[str] | None:
    """Class names for an output layer: ImageNet synsets for 1000-way fc8, digits for the embedded 10-way."""
    if layer not in ("fc8", "prob"):
        return None
    names = shipped.class_labels(width)
    return None if names is None else list(names)


def layer_width(classifier: Model, layer: str) -> int:
    """Number of units (channels) of ``layer``."""
    shape = jax.eval_shape(lambda p, x: classifier.apply(p, x, (layer,)), classifier.params,
                           jax.ShapeDtypeStruct((1, *classifier.input_shape), np.float32))
    return int(shape[layer].shape[-1])


# ----- the sweep ------------------------------------------------------------------------------------------------

def model_fingerprint(model: Model | None) -> dict:
    """Architecture and sha256 of a model's parameters: what a resumed sweep's models must match."""
    if model is None:
        return {}
    digest = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(model.params), key=lambda t: str(t[0])):
        digest.update(str(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return {"architecture": model.architecture, "params_sha256": digest.hexdigest()}


@dataclasses.dataclass
class SweepSummary:
    """What a sweep did: where, how many runs, the chunk size, devices, throughput."""

    out_dir: pathlib.Path
    runs: int
    computed: int
    chunk_size: int
    devices: int
    seconds: float
    units_per_second: float
    busy: tuple[str, ...] = ()  # chunks left to other live processes sharing the folder


def _run_list(config: SweepConfig) -> tuple[np.ndarray, np.ndarray]:
    units = np.repeat(np.asarray(config.units, np.int32), config.seeds_per_unit)
    seeds = np.tile(np.arange(config.seeds_per_unit, dtype=np.int32), len(config.units))
    return units, seeds


def sweep(classifier: Model, generator: Model | None, config: SweepConfig, out_dir: str | os.PathLike, *,
          devices: Sequence[Any] | None = None, progress: bool | None = None,
          max_chunks: int | None = None, scorer: Scorer | None = None) -> SweepSummary:
    """Run (or resume) a sweep into ``out_dir`` and write its table, images and gallery; see the module doc.

    ``max_chunks`` stops after computing that many chunks (for tests and time-boxed jobs; rerun resumes);
    ``scorer`` scores the runs (default: ``jaxviz.scoring.default_scorer(classifier)``). ``progress``: a bar
    per chunk on a terminal, one line per chunk otherwise (None), always a bar (True) or silent (False).
    """
    out = pathlib.Path(out_dir)
    if config.steps is None and config.method in METHODS:
        config = dataclasses.replace(config, steps=registry.default_steps(config.method))
    if config.steps is not None and config.steps < 1:
        raise ValueError(f"a sweep needs steps >= 1, got {config.steps}")
    if config.seeds_per_unit < 1:
        raise ValueError(f"seeds_per_unit must be >= 1, got {config.seeds_per_unit}")
    if config.chunk_size is not None and (not isinstance(config.chunk_size, int) or config.chunk_size < 1):
        raise ValueError(f"chunk_size must be an integer >= 1 (or None: from memory), got {config.chunk_size!r}")
    if max_chunks is not None and max_chunks < 0:
        raise ValueError(f"max_chunks must be >= 0 (or None: all), got {max_chunks}")
    width = layer_width(classifier, config.layer)
    parse_units(list(config.units), width)  # range check with a clear message before anything is written
    if config.method not in METHODS:
        raise ValueError(f"a sweep runs one of {', '.join(METHODS)} per unit, not {config.method!r} (inverse "
                         f"sets over units: jaxviz.workflows.inverse_sets)")
    if config.objective not in registry.OBJECTIVE_NAMES:
        raise ValueError(f"objective {config.objective!r}: expected one of {', '.join(registry.OBJECTIVE_NAMES)}")
    preset, objective = registry.build(config.method, classifier, generator, config.layer, config.steps,
                                       kind=registry.OBJECTIVE_NAMES[config.objective])
    units, seeds = _run_list(config)
    targets, keys = unit_keys(config.seed, config.units, config.seeds_per_unit)
    check_setup(classifier, objective, preset.param, preset.aux_params, targets[:1])

    mesh = batch_mesh(devices)
    n_dev = mesh.devices.size
    n_proc, proc = jax.process_count(), jax.process_index()
    free_bytes = min(device_memory_bytes(d) for d in mesh.devices.flat)
    run_bytes = estimate_run_bytes(classifier, preset, config.layer)
    measured = step_memory(classifier, preset, objective, targets, keys)   # compiled only if memory decides
    if config.chunk_size and (problem := chunk_size_problem(config.chunk_size, run_bytes, n_dev, free_bytes,
                                                            measured)):
        raise SweepError(problem)
    chunk = config.chunk_size or default_chunk_size(run_bytes, len(units), n_dev, free_bytes, measured)
    kind = registry.OBJECTIVE_NAMES[config.objective]
    auto = registry.default_kind(config.method, classifier, config.layer) if kind is None else "pre"
    # An "auto" that no longer means the pre-activation unit is recorded, and so are a method's departures
    # from its recipe (dgn_am's wider box on a hidden layer): a folder written before either is refused
    # rather than finished under another objective or other settings.
    settings = registry.method_settings(config.method, classifier, config.layer)
    manifest = {"format": FORMAT, **config.identity(), **({"auto_objective": auto} if auto != "pre" else {}),
                **({"method_settings": settings} if settings else {}),
                "chunk_size": chunk,
                "classifier": model_fingerprint(classifier),
                "generator": model_fingerprint(generator) if registry.METHODS[config.method].needs_generator else {},
                "preprocessing": dict(classifier.metadata.get("preprocessing") or {})}
    manifest = open_output(out, manifest)
    if config.chunk_size and config.chunk_size != manifest["chunk_size"]:
        raise SweepError(f"{out} was started with chunk size {manifest['chunk_size']}; resume it with that "
                         f"chunk size (or none) so its chunks stay identical")
    chunk = int(manifest["chunk_size"])
    if chunk % n_dev:
        raise SweepError(f"chunk size {chunk} does not divide over {n_dev} devices; resume on a device count "
                         f"that divides it")
    if problem := chunk_size_problem(chunk, run_bytes, n_dev, free_bytes, measured):
        raise SweepError(f"{out} was started with {problem} (resume it on a device with more memory, or start a "
                         f"new --out folder)")
    job = runfolder.job_id(manifest)

    def runs_of(c: int) -> tuple[np.ndarray, np.ndarray]:
        return units[c * chunk:(c + 1) * chunk], seeds[c * chunk:(c + 1) * chunk]

    n_chunks = -(-len(units) // chunk)
    mine = [c for c in range(n_chunks) if c % n_proc == proc]
    runfolder.warn_stray_chunks(out, n_chunks)
    todo = runfolder.pending_chunks(out, job, mine, runs_of)  # damaged or foreign chunks are set aside
    mode = mode_for(progress)
    done_runs = len(units) - sum(min(chunk, len(units) - c * chunk) for c in todo)

    batch = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = NamedSharding(mesh, PartitionSpec())
    run = compiled_run(classifier.function, objective, preset.param, preset.method, True, False)
    net_params = jax.device_put(classifier.params, replicated)
    aux_params = jax.device_put(preset.aux_params, replicated)
    labels = unit_labels(config.layer, width)
    pre = manifest["preprocessing"]

    t0, computed, chunks_done = time.perf_counter(), 0, 0
    if done_runs:
        Stage(f"sweep {config.layer} {config.method}: resuming", len(units), "run", mode=mode,
              initial=done_runs).close(f"{done_runs} runs already in {out}")

    def compute_chunk(c: int) -> int:
        lo, hi = c * chunk, min((c + 1) * chunk, len(units))
        # Pad the short last chunk with copies of its last run: same shapes, so no new compilation.
        idx = np.minimum(np.arange(lo, lo + chunk), hi - 1)
        tc = time.perf_counter()
        stage = Stage(f"sweep {config.layer} {config.method}: chunk {c + 1}/{n_chunks} (runs {lo}-{hi - 1})",
                      preset.method.steps, "step", mode=mode)
        try:
            result = run(net_params, aux_params, jax.device_put(targets[idx], batch),
                         jax.device_put(keys[idx], batch), on_step=stage.update)
            result = jax.device_get(result)
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            raise SweepError(f"out of memory computing chunk {c} ({chunk} runs on {n_dev} device(s)): "
                             f"{runfolder.shorten(err, 200)}; start a new --out folder with a smaller "
                             f"--chunk-size") from None
        seconds = time.perf_counter() - tc
        n = hi - lo
        arrays = {"unit": units[lo:hi], "seed_index": seeds[lo:hi], "image": result.image[:n],
                  "best_image": result.best_image[:n], "z": result.z[:n], "activation": result.activation[:n],
                  "final_activation": result.final_activation[:n], "rank": result.rank[:n],
                  "final_objective": result.final_objective[:n], "best_objective": result.best_objective[:n],
                  "failed_step": result.failed_step[:n], "stopped_step": result.stopped_step[:n],
                  "seconds": np.full((n,), seconds / n, np.float64)}
        # PNGs first, the chunk file last: the chunk file is the commit, so a crash in between redoes the chunk.
        # The chunk records the sha256 of its arrays and PNGs, so a damaged file is found later.
        write_or_explain(f"the images of chunk {c}", lambda: _write_unit_pngs(out, arrays, pre), out)
        files = write_or_explain(f"the images of chunk {c}", lambda: _unit_file_digests(out, arrays), out)
        write_or_explain(f"chunk {c}", lambda: atomic_write_bytes(
            chunk_path(out, c), runfolder.chunk_bytes(arrays, job, c, files)), out)
        stage.close(f"{n} runs, {computed + n + done_runs}/{len(units)} done")
        return n

    busy: list[str] = []  # chunks that other live processes are computing
    for c in todo:
        if max_chunks is not None and chunks_done >= max_chunks:
            break
        claim = runfolder.claim_path(out, c)
        holder = write_or_explain(f"the claim of chunk {c}", lambda: runfolder.try_claim(claim), out)
        if holder is not None:
            busy.append(f"chunk {c} is being computed by {holder}")
            continue
        try:
            if chunk_path(out, c).exists():  # committed by another process meanwhile
                continue
            computed += compute_chunk(c)
            chunks_done += 1
        finally:
            runfolder.release_claim(claim)
    seconds = time.perf_counter() - t0
    if n_proc > 1:
        multihost_utils.sync_global_devices("jaxviz-sweep-chunks")
    summary = SweepSummary(out, len(units), computed, chunk, n_dev, seconds,
                           computed / seconds if computed and seconds > 0 else 0.0, tuple(busy))
    try:
        if proc == 0 and all(chunk_path(out, c).exists() for c in range(n_chunks)):
            scorer = default_scorer(classifier) if scorer is None else scorer
            write_or_explain("the results table and gallery",
                             lambda: finalize(out, labels, summary, scorer, objective.unit_position), out)
    finally:
        if n_proc > 1:
            # Every process leaves together: one that returned (and shut jax.distributed down) while process 0
            # still wrote the gallery would fail the shutdown barrier and abort both.
            multihost_utils.sync_global_devices("jaxviz-sweep-finalized")
    return summary


def _unit_stem(unit: int, seed_index: int) -> str:
    return f"unit_{unit:05d}_s{seed_index}"


TILE_PIXELS = 112  # unit PNGs are enlarged (nearest neighbour) to at least this size


def unit_picture(image: np.ndarray, pre: dict) -> np.ndarray:
    """A network-space image as a display image enlarged to a readable tile (pixels kept sharp)."""
    shown = pp.to_display(image, pre)
    scale = max(1, -(-TILE_PIXELS // max(shown.shape[:2])))
    return np.repeat(np.repeat(shown, scale, axis=0), scale, axis=1)


def _write_unit_pngs(out: pathlib.Path, arrays: dict, pre: dict) -> None:
    # The tile shows the best image of the run (what its scores describe), not the last one.
    for i, (u, s) in enumerate(zip(arrays["unit"], arrays["seed_index"])):
        png = out / UNITS_DIR / f"{_unit_stem(int(u), int(s))}.png"
        atomic_write_bytes(png, png_bytes(unit_picture(arrays["best_image"][i][0], pre)))


def load_chunks(out_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every finished chunk of a sweep folder, verified, concatenated in run order.

    Only the chunk indices of the folder's manifest are read (a stray file is ignored); a damaged or
    foreign chunk is a ``SweepError`` naming it (``sweep`` on the folder recomputes it).
    """
    out = pathlib.Path(out_dir)
    if not (out / MANIFEST).is_file():
        raise SweepError(f"{out} holds no sweep manifest ({MANIFEST}): not a sweep folder")
    manifest = runfolder.read_manifest(out / MANIFEST)
    try:
        units = np.repeat(np.asarray(manifest["units"], np.int32), int(manifest["seeds_per_unit"]))
        seeds = np.tile(np.arange(int(manifest["seeds_per_unit"]), dtype=np.int32), len(manifest["units"]))
    except (KeyError, TypeError, ValueError):
        raise SweepError(f"{out / MANIFEST} is damaged (no valid units or seeds_per_unit); delete the folder to "
                         f"start over") from None
    chunk = manifest["chunk_size"]
    parts = runfolder.load_chunk_files(out, -(-len(units) // chunk), runfolder.job_id(manifest),
                                       lambda c: (units[c * chunk:(c + 1) * chunk], seeds[c * chunk:(c + 1) * chunk]))
    if not parts:
        raise SweepError(f"{out} holds no finished chunk")
    return {k: np.concatenate([p.arrays[k] for p in parts]) for k in parts[0].arrays}


def _unit_file_digests(out: pathlib.Path, arrays: dict) -> dict[str, str]:
    """sha256 of the unit PNGs of a chunk as written (recorded in the chunk file)."""
    found = {}
    for u, s in zip(arrays["unit"], arrays["seed_index"]):
        name = f"{UNITS_DIR}/{_unit_stem(int(u), int(s))}.png"
        found[name] = runfolder.file_sha256((out / name).read_bytes())
    return found


def _ensure_unit_files(out: pathlib.Path, rows: list[dict], data: dict[str, np.ndarray], pre: dict) -> None:
    """Every run's code (.npy) and PNG present and whole; missing or damaged ones are written anew from
    the chunks (which verified), a damaged one with a warning naming it."""
    digests = runfolder.unit_file_digests(out)
    for i, row in enumerate(rows):
        code, want = out / row["code"], npy_bytes(data["z"][i])
        have = runfolder.read_or_none(code)
        if have != want:
            if have is not None:
                runfolder.warn_damaged(code, "does not match the code in its chunk")
            atomic_write_bytes(code, want)
        png = out / row["image"]
        have = runfolder.read_or_none(png)
        recorded = digests.get(row["image"])
        if have is not None and (runfolder.file_sha256(have) == recorded if recorded else runfolder.png_is_whole(have)):
            continue
        if have is not None:
            runfolder.warn_damaged(png, "is damaged (does not match its checksum)")
        _write_unit_pngs(out, {k: v[i:i + 1] for k, v in data.items()}, pre)


def result_rows(data: dict[str, np.ndarray], labels: list[str] | None, steps: int,
                reports: Sequence[Report] | None = None) -> list[dict]:
    """One table row per run: unit, label, final and best activation, rank, steps, seconds, image file,
    and, with ``reports``, the scores of the run's best image (percentile, judge, path, flags)."""
    rows = []
    for i, (u, s) in enumerate(zip(data["unit"].tolist(), data["seed_index"].tolist())):
        trace = data["activation"][i].reshape(-1)
        final = float(data["final_activation"][i].reshape(-1)[0])
        finite = trace[np.isfinite(trace)]
        best = max([final] + ([float(finite.max())] if finite.size else []))
        rows.append({"unit": u, "seed": s, "label": labels[u] if labels else None,
                     "final_activation": final, "best_activation": best,
                     "rank": int(data["rank"][i].reshape(-1)[0]), "steps": steps,
                     "seconds": round(float(data["seconds"][i]), 4),
                     "failed_step": int(data["failed_step"][i]),
                     "image": f"{UNITS_DIR}/{_unit_stem(u, s)}.png", "code": f"{UNITS_DIR}/{_unit_stem(u, s)}.npy"})
        if reports is not None:
            scored = reports[i].as_dict()
            rows[-1].update({"shown": "best", "scored_activation": scored["activation"], "scored_rank": scored["rank"],
                             **{k: scored[k] for k in ("percentile", "judge_label", "judge_probability",
                                                       "target_label", "path_score", "seed_diversity", "flags")}})
    return rows


def score_runs(scorer: Scorer, data: dict[str, np.ndarray], layer: str, position: Any) -> list[Report]:
    """A report per run of a sweep, for the best image of each run (what its tile shows)."""
    trace = data["activation"].reshape(len(data["unit"]), -1)
    trace_max = np.max(np.where(np.isfinite(trace), trace, -np.inf), axis=1)
    images = data["best_image"][:, 0]
    groups = data["unit"].tolist() if len(set(data["seed_index"].tolist())) > 1 else None
    return scorer.score(images, layer, data["unit"].tolist(), position, trace_max, data["failed_step"], groups)


def flag_counts(rows: Sequence[dict]) -> dict[str, int]:
    """How many runs carry each flag."""
    counts: dict[str, int] = {}
    for row in rows:
        for flag in row.get("flags") or ():
            counts[flag["name"]] = counts.get(flag["name"], 0) + 1
    return dict(sorted(counts.items()))


def finalize(out: pathlib.Path, labels: list[str] | None, summary: SweepSummary, scorer: Scorer | None = None,
             position: Any = "center") -> None:
    """From the chunk files: codes, missing PNGs, scores, results.jsonl, metadata.json, contact sheets, index.html."""
    manifest = runfolder.read_manifest(out / MANIFEST)
    data = load_chunks(out)
    reports = score_runs(scorer, data, manifest["layer"], position) if scorer is not None else None
    rows = result_rows(data, labels, manifest["steps"], reports)
    _ensure_unit_files(out, rows, data, manifest["preprocessing"])
    atomic_write_bytes(out / RESULTS, "".join(json.dumps(r) + "\n" for r in rows).encode())
    previous = runfolder.read_json_or_empty(out / METADATA)  # a damaged one is rewritten below
    # A resumed sweep that computed nothing keeps the throughput its computing run measured.
    rate = summary.units_per_second if summary.computed else previous.get("units_per_second", 0.0)
    meta = {"runs": summary.runs, "computed_this_time": summary.computed, "chunk_size": summary.chunk_size,
            "devices": summary.devices, "platform": jax.default_backend(),
            "seconds_this_time": round(summary.seconds, 2), "units_per_second": round(rate, 3),
            "flags": flag_counts(rows), "scored_against": scorer.reference.source if scorer and scorer.reference
            else None, "judge": scorer.judge.architecture if scorer and scorer.judge else None}
    atomic_write_bytes(out / METADATA, json.dumps(meta, indent=1).encode())
    sheets = gallery.write_contact_sheets(out, rows, manifest["preprocessing"])
    title = f"{manifest['method']} sweep of {manifest['layer']}: {len(rows)} runs, {manifest['steps']} steps"
    gallery.write_gallery(out / "index.html", title, [gallery.Section(title, rows, sheets)], meta)


__all__ = ["SweepConfig", "SweepError", "SweepSummary", "sweep", "parse_units", "unit_labels", "layer_width",
           "load_chunks", "result_rows", "finalize", "model_fingerprint", "METHODS", "score_runs", "flag_counts",
           "unit_picture", "TILE_PIXELS"]
