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
import importlib.resources
import io
import json
import os
import pathlib
import sys
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxviz import objectives, render
from jaxviz.optimize import compiled_run
from jaxviz.api import check_setup, module_apply, unit_keys

FORMAT = "jaxviz-sweep/1"
METHODS = ("dgn_am", "pixel", "sampler")
MANIFEST = "manifest.json"
CHUNKS = "chunks"
UNITS_DIR = "units"
RESULTS = "results.jsonl"
METADATA = "metadata.json"
MAX_CHUNK = 256


class SweepError(Exception):
    """A sweep that cannot start or go on: a foreign output folder, an unwritable or full disk."""


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """What a sweep computes; everything but ``chunk_size`` identifies its results."""

    layer: str
    units: tuple[int, ...]
    method: str = "dgn_am"
    steps: int = 200
    seeds_per_unit: int = 1
    seed: int = 0
    chunk_size: int | None = None  # None: chosen from the device memory

    def identity(self) -> dict:
        """The fields a folder's results must match to be resumed."""
        return {"layer": self.layer, "units": list(self.units), "method": self.method, "steps": self.steps,
                "seeds_per_unit": self.seeds_per_unit, "seed": self.seed}


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
    if width == 1000:
        text = importlib.resources.files("jaxviz").joinpath("data", "synset_words.txt").read_text()
        return [line.split(" ", 1)[1].strip() for line in text.splitlines() if line.strip()]
    if width == 10:
        return [str(i) for i in range(10)]
    return None


def layer_width(classifier: Any, layer: str) -> int:
    """Number of units (channels) of ``layer``."""
    shape = jax.eval_shape(lambda p, x: classifier.apply(p, x, (layer,)), classifier.params,
                           jax.ShapeDtypeStruct((1, *classifier.input_shape), np.float32))
    return int(shape[layer].shape[-1])


# ----- methods ------------------------------------------------------------------------------------------

def build_method(method: str, classifier: Any, generator: Any, layer: str, steps: int):
    """(preset, objective) of a method name; built once per sweep so every chunk reuses one compilation."""
    from jaxviz import presets

    if method == "dgn_am":
        return presets.dgn_am(generator, steps=steps), objectives.unit(layer)
    if method == "pixel":
        # Setting 4 of Yosinski et al. 2015 (blur, contribution clipping, step size set by progress): the
        # fixed step size of settings 2-3 is tuned to CaffeNet's gradients and barely moves a small net.
        return presets.yosinski2015(4, classifier.input_shape, mean=pixel_mean(classifier), steps=steps), \
            objectives.unit(layer)
    if method == "sampler":
        preset = presets.ppgn_sampler(generator, class_layer=layer, steps=steps)
        return preset, preset.objective
    raise ValueError(f"unknown sweep method {method!r}; known: {', '.join(METHODS)} (inverse sets over units: "
                     f"jaxviz.sweep_inverse.sweep_inverse_sets)")


def pixel_mean(classifier: Any) -> np.ndarray | None:
    """The mean a classifier's preprocessing card subtracts, as an array (None when it names none)."""
    pre = classifier.metadata.get("preprocessing") or {}
    mean = pre.get("mean")
    if mean is None:
        return None
    if isinstance(mean, str):
        from jaxviz.models import preprocessing as caffe_pre
        h, w = classifier.input_shape[:2]
        return np.asarray(caffe_pre.resolve_mean(mean, h, w), np.float32)
    return np.asarray(mean, np.float32)


def model_fingerprint(model: Any) -> dict:
    """Architecture and sha256 of a model's parameters: what a resumed sweep's models must match."""
    if model is None:
        return {}
    digest = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(model.params), key=lambda t: str(t[0])):
        digest.update(str(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return {"architecture": model.architecture, "params_sha256": digest.hexdigest()}


# ----- chunk size and devices ------------------------------------------------------------------------------

def device_memory_bytes(device: Any) -> int:
    """Free memory of a device: the allocator's limit minus use on GPU/TPU, available RAM on CPU."""
    try:
        stats = device.memory_stats() or {}
    except Exception:  # CPU backends raise or return None
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 4 << 30


def estimate_run_bytes(classifier: Any, preset: Any, layer: str) -> int:
    """Rough memory of one run's step: every activation up to ``layer`` and the image, forward and backward."""
    from jaxviz.models import caffenet_tap_names

    x = jax.ShapeDtypeStruct((1, *classifier.input_shape), np.float32)
    try:
        taps = tuple(caffenet_tap_names())
        acts = jax.eval_shape(lambda p, v: classifier.apply(p, v, taps), classifier.params, x)
    except Exception:  # prototxt networks name their own taps
        acts = jax.eval_shape(lambda p, v: classifier.apply(p, v, (layer,)), classifier.params, x)
    floats = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(acts)) + int(np.prod(x.shape))
    if getattr(preset.param, "is_code", False):
        gen_acts = jax.eval_shape(lambda p, z: preset.param.render(p, z), preset.aux_params,
                                  jax.ShapeDtypeStruct((1, preset.param.code_size), np.float32))
        floats += 4 * int(np.prod(gen_acts.shape))  # the generator's hidden layers, roughly
    # x4: activations, their gradients, the transform's copy and XLA's temporaries.
    return 4 * 4 * floats


def choose_chunk_size(run_bytes: int, n_runs: int, n_devices: int, memory_bytes: int,
                      cap: int = MAX_CHUNK) -> int:
    """Runs per chunk: what half the free memory of every device holds, a multiple of the device count.

    Never more than the sweep needs (rounded up to the devices), so a small sweep is one chunk.
    """
    per_device = max(1, int(memory_bytes // 2 // max(run_bytes, 1)))
    size = min(per_device * n_devices, cap, -(-n_runs // n_devices) * n_devices)
    return max(n_devices, size // n_devices * n_devices)


def batch_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D mesh named ``batch`` over the local devices (or the given ones)."""
    devs = list(jax.local_devices() if devices is None else devices)
    return Mesh(np.asarray(devs), ("batch",))


# ----- files ------------------------------------------------------------------------------------------------

def atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees either nothing or the whole file, even after a crash."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def chunk_path(out: pathlib.Path, index: int) -> pathlib.Path:
    """The file of chunk ``index``."""
    return out / CHUNKS / f"chunk_{index:05d}.npz"


def _write_or_explain(what: str, fn: Callable[[], Any], out: pathlib.Path) -> Any:
    try:
        return fn()
    except OSError as err:
        raise SweepError(f"cannot write {what} in {out}: {err.strerror or err}. Every chunk finished before "
                         f"this one is kept; free space or fix the folder's permissions and run the same "
                         f"sweep again to resume") from err


def open_output(out: pathlib.Path, manifest: dict) -> dict:
    """Create or reopen a sweep folder; refuses one holding another sweep. Returns the manifest in force."""
    path = out / MANIFEST
    if path.exists():
        old = json.loads(path.read_text())
        mine = {k: manifest[k] for k in manifest if k != "chunk_size"}
        theirs = {k: old.get(k) for k in mine}
        if mine != theirs:
            diff = ", ".join(f"{k}: {theirs[k]!r} there vs {mine[k]!r} asked" if k != "units" else "units differ"
                             for k in mine if mine[k] != theirs[k])
            raise SweepError(f"{out} holds the results of a different sweep ({diff}); refusing to mix them. "
                             f"Use another --out folder, or delete that one to start over")
        return old
    if out.exists() and any(p.name != ".gitkeep" for p in out.iterdir()):
        raise SweepError(f"{out} is not empty and holds no sweep manifest; refusing to write a sweep into it")

    def create() -> None:
        (out / CHUNKS).mkdir(parents=True, exist_ok=True)
        (out / UNITS_DIR).mkdir(exist_ok=True)
        atomic_write_bytes(path, json.dumps(manifest, indent=1).encode())
    _write_or_explain("the sweep manifest", create, out)
    return manifest


# ----- progress ------------------------------------------------------------------------------------------------

class Progress:
    """A one-line progress bar with units/s and ETA on a terminal; silent when not a TTY or under CI."""

    def __init__(self, total: int, done: int = 0, stream: Any = None, enabled: bool | None = None):
        self.stream = sys.stderr if stream is None else stream
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = (tty and not os.environ.get("CI")) if enabled is None else enabled
        self.total, self.done, self.start_done, self.t0 = total, done, done, time.perf_counter()

    def update(self, n: int) -> None:
        """Count ``n`` more finished runs and redraw."""
        self.done += n
        if not self.enabled:
            return
        rate = (self.done - self.start_done) / max(time.perf_counter() - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        width = 30
        bar = "#" * int(width * self.done / max(self.total, 1))
        self.stream.write(f"\r[{bar:<{width}}] {self.done}/{self.total} units  {rate:.2f} units/s  "
                          f"ETA {eta:5.0f} s ")
        self.stream.flush()

    def close(self) -> None:
        """End the line."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


# ----- the sweep ------------------------------------------------------------------------------------------------

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


def _run_list(config: SweepConfig) -> tuple[np.ndarray, np.ndarray]:
    units = np.repeat(np.asarray(config.units, np.int32), config.seeds_per_unit)
    seeds = np.tile(np.arange(config.seeds_per_unit, dtype=np.int32), len(config.units))
    return units, seeds


def sweep(classifier: Any, generator: Any, config: SweepConfig, out_dir: str | os.PathLike, *,
          devices: Sequence[Any] | None = None, progress: bool | None = None,
          max_chunks: int | None = None) -> SweepSummary:
    """Run (or resume) a sweep into ``out_dir`` and write its table, images and gallery; see the module doc.

    ``max_chunks`` stops after computing that many chunks (for tests and time-boxed jobs; rerun resumes).
    """
    out = pathlib.Path(out_dir)
    if config.steps < 1:
        raise ValueError(f"a sweep needs steps >= 1, got {config.steps}")
    if config.seeds_per_unit < 1:
        raise ValueError(f"seeds_per_unit must be >= 1, got {config.seeds_per_unit}")
    width = layer_width(classifier, config.layer)
    parse_units(list(config.units), width)  # range check with a clear message before anything is written
    preset, objective = build_method(config.method, classifier, generator, config.layer, config.steps)
    units, seeds = _run_list(config)
    targets, keys = unit_keys(config.seed, config.units, config.seeds_per_unit)
    check_setup(classifier, objective, preset.param, preset.aux_params, targets[:1])

    mesh = batch_mesh(devices)
    n_dev = mesh.devices.size
    n_proc, proc = jax.process_count(), jax.process_index()
    chunk = config.chunk_size or choose_chunk_size(
        estimate_run_bytes(classifier, preset, config.layer), len(units), n_dev,
        min(device_memory_bytes(d) for d in mesh.devices.flat))
    manifest = {"format": FORMAT, **config.identity(), "chunk_size": chunk,
                "classifier": model_fingerprint(classifier),
                "generator": model_fingerprint(generator) if config.method != "pixel" else {},
                "preprocessing": dict(classifier.metadata.get("preprocessing") or {})}
    manifest = open_output(out, manifest)
    if config.chunk_size and config.chunk_size != manifest["chunk_size"]:
        raise SweepError(f"{out} was started with chunk size {manifest['chunk_size']}; resume it with that "
                         f"chunk size (or none) so its chunks stay identical")
    chunk = int(manifest["chunk_size"])
    if chunk % n_dev:
        raise SweepError(f"chunk size {chunk} does not divide over {n_dev} devices; resume on a device count "
                         f"that divides it")

    n_chunks = -(-len(units) // chunk)
    mine = [c for c in range(n_chunks) if c % n_proc == proc]
    todo = [c for c in mine if not chunk_path(out, c).exists()]
    bar = Progress(len(units), len(units) - sum(min(chunk, len(units) - c * chunk) for c in todo), enabled=progress)

    batch = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = NamedSharding(mesh, PartitionSpec())
    run = compiled_run(module_apply(classifier.module), objective, preset.param, preset.method, True, False)
    net_params = jax.device_put(classifier.params, replicated)
    aux_params = jax.device_put(preset.aux_params, replicated)
    labels = unit_labels(config.layer, width)
    pre = manifest["preprocessing"]

    t0, computed = time.perf_counter(), 0
    for c in todo[:max_chunks] if max_chunks is not None else todo:
        lo, hi = c * chunk, min((c + 1) * chunk, len(units))
        # Pad the short last chunk with copies of its last run: same shapes, so no new compilation.
        idx = np.minimum(np.arange(lo, lo + chunk), hi - 1)
        tc = time.perf_counter()
        result = run(net_params, aux_params, jax.device_put(targets[idx], batch), jax.device_put(keys[idx], batch))
        result = jax.device_get(result)
        seconds = time.perf_counter() - tc
        n = hi - lo
        arrays = {"unit": units[lo:hi], "seed_index": seeds[lo:hi], "image": result.image[:n],
                  "best_image": result.best_image[:n], "z": result.z[:n], "activation": result.activation[:n],
                  "final_activation": result.final_activation[:n], "rank": result.rank[:n],
                  "final_objective": result.final_objective[:n], "best_objective": result.best_objective[:n],
                  "failed_step": result.failed_step[:n], "stopped_step": result.stopped_step[:n],
                  "seconds": np.full((n,), seconds / n, np.float64)}
        # PNGs first, the chunk file last: the chunk file is the commit, so a crash in between redoes the chunk.
        _write_or_explain(f"the images of chunk {c}", lambda: _write_unit_pngs(out, arrays, pre), out)
        _write_or_explain(f"chunk {c}", lambda: atomic_write_bytes(chunk_path(out, c), _npz_bytes(arrays)), out)
        computed += n
        bar.update(n)
    bar.close()
    seconds = time.perf_counter() - t0
    if n_proc > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("jaxviz-sweep-chunks")
    summary = SweepSummary(out, len(units), computed, chunk, n_dev, seconds,
                           computed / seconds if computed and seconds > 0 else 0.0)
    if proc == 0 and all(chunk_path(out, c).exists() for c in range(n_chunks)):
        _write_or_explain("the results table and gallery", lambda: finalize(out, labels, summary), out)
    return summary


def _unit_stem(unit: int, seed_index: int) -> str:
    return f"unit_{unit:05d}_s{seed_index}"


def _write_unit_pngs(out: pathlib.Path, arrays: dict, pre: dict) -> None:
    for i, (u, s) in enumerate(zip(arrays["unit"], arrays["seed_index"])):
        png = out / UNITS_DIR / f"{_unit_stem(int(u), int(s))}.png"
        buf = io.BytesIO()
        render.to_pil(render.to_display(arrays["image"][i][0], pre)).save(buf, format="PNG")
        atomic_write_bytes(png, buf.getvalue())


def load_chunks(out_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every finished chunk of a sweep folder, concatenated in run order."""
    out = pathlib.Path(out_dir)
    files = sorted((out / CHUNKS).glob("chunk_*.npz"))
    if not files:
        raise SweepError(f"{out} holds no finished chunk")
    parts = []
    for f in files:
        with np.load(f) as z:
            parts.append({k: z[k] for k in z.files})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def result_rows(data: dict[str, np.ndarray], labels: list[str] | None, steps: int) -> list[dict]:
    """One table row per run: unit, label, final and best activation, rank, steps, seconds, image file."""
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
    return rows


def finalize(out: pathlib.Path, labels: list[str] | None, summary: SweepSummary) -> None:
    """From the chunk files: codes, missing PNGs, results.jsonl, metadata.json, contact sheets, index.html."""
    from jaxviz import gallery

    manifest = json.loads((out / MANIFEST).read_text())
    data = load_chunks(out)
    rows = result_rows(data, labels, manifest["steps"])
    for i, row in enumerate(rows):
        code = out / row["code"]
        if not code.exists():
            buf = io.BytesIO()
            np.save(buf, data["z"][i])
            atomic_write_bytes(code, buf.getvalue())
        if not (out / row["image"]).exists():
            _write_unit_pngs(out, {k: data[k][i:i + 1] for k in ("unit", "seed_index", "image")},
                             manifest["preprocessing"])
    atomic_write_bytes(out / RESULTS, "".join(json.dumps(r) + "\n" for r in rows).encode())
    meta = {"runs": summary.runs, "computed_this_time": summary.computed, "chunk_size": summary.chunk_size,
            "devices": summary.devices, "platform": jax.default_backend(),
            "seconds_this_time": round(summary.seconds, 2),
            "units_per_second": round(summary.units_per_second, 3)}
    atomic_write_bytes(out / METADATA, json.dumps(meta, indent=1).encode())
    sheets = gallery.write_contact_sheets(out, rows, manifest["preprocessing"])
    title = f"{manifest['method']} sweep of {manifest['layer']}: {len(rows)} runs, {manifest['steps']} steps"
    gallery.write_gallery(out / "index.html", title, [gallery.Section(title, rows, sheets)], meta)


__all__ = ["SweepConfig", "SweepError", "SweepSummary", "sweep", "parse_units", "unit_labels", "layer_width",
           "build_method", "choose_chunk_size", "device_memory_bytes", "estimate_run_bytes", "batch_mesh",
           "load_chunks", "result_rows", "finalize", "model_fingerprint", "Progress", "METHODS"]
