"""Devices for a batched job: free memory, the memory of one run, the chunk size, the batch mesh."""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from jaxviz.core.loop import compiled_parts
from jaxviz.models import caffenet_tap_names
from jaxviz.models.model import Model
from jaxviz.recipes.preset import Preset

MAX_CHUNK = 256


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


def estimate_run_bytes(classifier: Model, preset: Preset, layer: str) -> int:
    """Rough memory of one run's step: every activation up to ``layer`` and the image, forward and backward."""
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


class StepMemory(NamedTuple):
    """A compiled step's memory as XLA's buffer assignment counts it: ``fixed + runs * per_run`` bytes."""

    per_run: int   # what each further run of a chunk adds (its activations, gradients, loop state)
    fixed: int     # what the step needs whatever the chunk (weights, temporaries shared by the runs)


def step_buffers(parts: Any, params: Any, aux_params: Any, targets: Any, keys: Any, runs: int) -> Any:
    """XLA's memory analysis of a run's vmapped step (``parts``: ``core.loop.compiled_parts(...,
    batched=True)``) compiled for ``runs`` runs shaped like ``targets`` and ``keys``; None where the
    backend does not report it."""
    cut = lambda a: jax.ShapeDtypeStruct((runs, *a.shape[1:]), a.dtype)   # noqa: E731
    t, k = jax.tree_util.tree_map(cut, targets), cut(keys)
    carry = jax.eval_shape(parts.init, params, aux_params, t, k)
    compiled = parts.step.lower(params, aux_params, t, carry, jax.ShapeDtypeStruct((), np.int32)).compile()
    try:
        return compiled.memory_analysis()
    except Exception:  # noqa: BLE001  (a backend that does not implement it)
        return None


def measure_step_memory(parts: Any, params: Any, aux_params: Any, targets: Any, keys: Any,
                        runs: tuple[int, int] = (8, 16)) -> StepMemory | None:
    """XLA's count of a run's vmapped step at ``runs[0]`` and ``runs[1]`` runs (``step_buffers``: its
    temporaries, arguments and outputs), as a fixed part and a part per run; None where not reported."""
    def total(n: int) -> int | None:
        m = step_buffers(parts, params, aux_params, targets, keys, n)
        return None if m is None else int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)

    (a, b), sizes = runs, [total(n) for n in runs]
    if None in sizes or sizes[1] <= sizes[0]:
        return None
    per_run = -(-(sizes[1] - sizes[0]) // (b - a))
    return StepMemory(per_run=per_run, fixed=max(0, sizes[0] - a * per_run))


def choose_chunk_size(run_bytes: int, n_runs: int, n_devices: int, memory_bytes: int,
                      cap: int = MAX_CHUNK, fixed_bytes: int = 0) -> int:
    """Runs per chunk: what half the free memory of every device holds, a multiple of the device count.

    ``run_bytes`` each run, ``fixed_bytes`` once per device whatever the chunk. Never more than the sweep
    needs (rounded up to the devices), so a small sweep is one chunk.
    """
    per_device = max(1, int((memory_bytes // 2 - fixed_bytes) // max(run_bytes, 1)))
    size = min(per_device * n_devices, cap, -(-n_runs // n_devices) * n_devices)
    return max(n_devices, size // n_devices * n_devices)


def step_memory(classifier: Model, preset: Preset, objective: Any, targets: Any,
                keys: Any) -> Callable[[], StepMemory | None]:
    """XLA's count of a sweep's step (``measure_step_memory``), measured at its first call, then kept."""
    @functools.cache
    def measure() -> StepMemory | None:
        parts = compiled_parts(classifier.function, objective, preset.param, preset.method, True, False)
        return measure_step_memory(parts, classifier.params, preset.aux_params, targets, keys)
    return measure


def default_chunk_size(estimate_bytes: int, n_runs: int, n_devices: int, memory_bytes: int,
                       measure: Callable[[], StepMemory | None]) -> int:
    """The chunk size of a sweep that names none: half the free memory of each device over a run's memory.

    First by ``estimate_run_bytes`` (``estimate_bytes``), which is 2-3.5x above what XLA assigns a run
    (benchmarks/README.md, ``chunk_memory``): where that leaves room for every run (or ``MAX_CHUNK``),
    nothing more is needed. Where memory decides, XLA's count of the compiled step (``measure()``) does.
    """
    chunk = choose_chunk_size(estimate_bytes, n_runs, n_devices, memory_bytes)
    if chunk >= min(MAX_CHUNK, -(-n_runs // n_devices) * n_devices):
        return chunk
    measured = measure()
    if measured is None:
        return chunk
    return choose_chunk_size(measured.per_run, n_runs, n_devices, memory_bytes, fixed_bytes=measured.fixed)


def batch_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D mesh named ``batch`` over the local devices (or the given ones)."""
    devs = list(jax.local_devices() if devices is None else devices)
    return Mesh(np.asarray(devs), ("batch",))


def chunk_memory_problem(chunk: int, run_bytes: int, n_devices: int, memory_bytes: int) -> str | None:
    """Why ``chunk`` runs do not fit in the devices' free memory (by ``estimate_run_bytes``), or None.

    The estimate is rough (x4 for gradients and temporaries, 2-3.5x above XLA's count): where it says no,
    ``chunk_size_problem`` asks XLA's count of the step before a size is refused.
    """
    per_device = -(-chunk // max(n_devices, 1)) * run_bytes
    if per_device <= memory_bytes:
        return None
    fits = max(0, memory_bytes // max(run_bytes, 1)) * n_devices
    return (f"chunk size {chunk} needs about {per_device / 2**30:.1f} GiB on each of {n_devices} device(s), "
            f"{memory_bytes / 2**30:.1f} GiB are free; use a chunk size of at most {fits} "
            f"(or leave it out to choose one from the free memory)")


def chunk_size_problem(chunk: int, estimate_bytes: int, n_devices: int, memory_bytes: int,
                       measure: Callable[[], StepMemory | None]) -> str | None:
    """Why ``chunk`` runs do not fit in the devices' free memory, or None: by the estimate, and where it
    says they do not, by XLA's count of the step (``measure()``), which ``default_chunk_size`` may use."""
    problem = chunk_memory_problem(chunk, estimate_bytes, n_devices, memory_bytes)
    measured = measure() if problem else None
    if measured is None:
        return problem
    per_device = measured.fixed + -(-chunk // max(n_devices, 1)) * measured.per_run
    if per_device <= memory_bytes:
        return None
    fits = max(0, (memory_bytes - measured.fixed) // measured.per_run) * n_devices
    return (f"chunk size {chunk} needs about {per_device / 2**30:.1f} GiB on each of {n_devices} device(s) "
            f"(XLA's count of its step), {memory_bytes / 2**30:.1f} GiB are free; use a chunk size of at most "
            f"{fits} (or leave it out to choose one from the free memory)")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether an exception from running a computation is the device running out of memory."""
    return isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in str(err)[:2000] or \
        "Out of memory" in str(err)[:2000]


__all__ = ["MAX_CHUNK", "device_memory_bytes", "estimate_run_bytes", "StepMemory", "step_buffers", "measure_step_memory",
           "step_memory", "choose_chunk_size", "default_chunk_size", "batch_mesh", "chunk_memory_problem",
           "chunk_size_problem", "is_out_of_memory"]
