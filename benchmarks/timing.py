"""Interleaved timing: every variant of a comparison runs in turn, round after round, in one process.

On a shared machine the load changes from second to second; timing variant A for a minute and then B
would put that change into the ratio. ``interleaved`` runs A, B, C, A, B, C, ... (the order rotated each
round), and reports each variant's median and all its samples, plus the machine load before and after.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Mapping

import jax


def load() -> list[float]:
    """1, 5 and 15-minute load averages (``os.getloadavg``)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def block(value):
    """Wait for JAX arrays and return the value (torch results are synchronous on CPU already)."""
    return jax.block_until_ready(value)


def interleaved(variants: Mapping[str, Callable[[], object]], repeats: int = 7, warmup: int = 1,
                min_seconds: float = 0.0) -> dict[str, dict]:
    """Median seconds per call of each zero-argument callable, measured in interleaved rounds.

    Each callable must do its whole work (and wait for it) before it returns. ``warmup`` untimed calls
    each first (compilation, allocator warm-up); then ``repeats`` rounds, each calling every variant once
    in a rotated order. ``cpu_median_s`` is the median process CPU time (all threads) per call: on an
oversubscribed machine, the work a call costs, whatever share of the cores it got. ``min_seconds``: keep adding rounds until the fastest variant's samples add up to
    at least that. Returns ``{name: {"median_s", "min_s", "samples_s", "load_before", "load_after"}}``.
    """
    names = list(variants)
    before = load()
    for name in names:
        for _ in range(warmup):
            variants[name]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    r = 0
    while r < repeats or (min_seconds and min(sum(s) for s in samples.values()) < min_seconds and r < 50):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            c0, t0 = time.process_time(), time.perf_counter()
            variants[name]()
            samples[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        r += 1
    after = load()
    return {n: {"median_s": statistics.median(s), "min_s": min(s), "samples_s": s,
                "cpu_median_s": statistics.median(cpu[n]), "load_before": before, "load_after": after}
            for n, s in samples.items()}


def machine() -> dict:
    """What the figures were measured on: device, cores, versions, load now."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
            "jax_backend": jax.default_backend(),
            "devices": [f"{d.platform}:{getattr(d, 'device_kind', '?')}" for d in jax.devices()],
            "load": load()}
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info
