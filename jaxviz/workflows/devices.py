"""Devices for a batched job: free memory, the memory of one run, the chunk size, the batch mesh."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

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


def chunk_memory_problem(chunk: int, run_bytes: int, n_devices: int, memory_bytes: int) -> str | None:
    """Why ``chunk`` runs do not fit in the devices' free memory (by ``estimate_run_bytes``), or None.

    The estimate is rough (x4 for gradients and temporaries); a chunk is refused only when even that
    estimate exceeds the free memory of a device, so it never refuses what the automatic choice
    (half the free memory) would pick.
    """
    per_device = -(-chunk // max(n_devices, 1)) * run_bytes
    if per_device <= memory_bytes:
        return None
    fits = max(0, memory_bytes // max(run_bytes, 1)) * n_devices
    return (f"chunk size {chunk} needs about {per_device / 2**30:.1f} GiB on each of {n_devices} device(s), "
            f"{memory_bytes / 2**30:.1f} GiB are free; use a chunk size of at most {fits} "
            f"(or leave it out to choose one from the free memory)")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether an exception from running a computation is the device running out of memory."""
    return isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in str(err)[:2000] or \
        "Out of memory" in str(err)[:2000]


__all__ = ["MAX_CHUNK", "device_memory_bytes", "estimate_run_bytes", "choose_chunk_size", "batch_mesh",
           "chunk_memory_problem", "is_out_of_memory"]
