"""Host-driven compiled step versus one ``lax.scan`` program, for the same runs, side by side.

XLA:CPU runs convolutions inside a while-loop body several times slower than in a top-level program;
``jaxviz.optimize.resolve_loop`` therefore drives the compiled step from the host on CPU and keeps the
whole run in one ``lax.scan`` on accelerators. This measures both drivers on the same setup (pixel-space
ascent of an fc8 unit of the real-size CaffeNet, random weights) on the machine at hand::

    python benchmarks/loop_driver.py [--batch 1] [--steps 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.core import objectives
from jaxviz.models import network_function
from jaxviz.models import CaffeNet, CaffeNetConfig
from jaxviz.core.loop import Method, compiled_run
from jaxviz.core.updates import normalized_gradient_ascent
from jaxviz.core.params import Pixels
from benchmarks.dgn_am_step import random_params


def seconds_per_step(run, params, targets, keys, steps: int, repeats: int) -> tuple[float, float]:
    """(best seconds per step over ``repeats`` calls, seconds of the first call)."""
    t0 = time.perf_counter()
    jax.block_until_ready(run(params, None, targets, keys))
    first = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run(params, None, targets, keys))
        best = min(best, time.perf_counter() - t0)
    return best / steps, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    module = CaffeNet(CaffeNetConfig())
    params = random_params(module, jnp.zeros((1, 227, 227, 3)), ("fc8",))
    base = Method(args.steps, normalized_gradient_ascent(1.0))
    keys = jax.random.split(jax.random.key(0), args.batch)
    targets = jnp.arange(args.batch, dtype=jnp.int32)
    times = {}
    for loop in ("host", "scan"):
        method = dataclasses.replace(base, loop=loop)
        run = compiled_run(network_function(module), objectives.unit("fc8"), Pixels((227, 227, 3)), method, True, False)
        per_step, first = seconds_per_step(run, params, targets, keys, args.steps, args.repeats)
        times[loop] = per_step
        print(f"{loop:5s} batch {args.batch}: {1000 * per_step:8.1f} ms/step (first call {first:.1f} s)", flush=True)
    print(f"time ratio scan / host: {times['scan'] / times['host']:.2f}  on {jax.devices()[0].platform}, "
          f"jax {jax.__version__}")


if __name__ == "__main__":
    main()
