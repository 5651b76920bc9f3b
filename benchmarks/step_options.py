"""The suite's steps compiled with XLA's defaults against the options a jaxviz run's step compiles with.

``jaxviz.core.loop.step_options`` keeps XLA:CPU's YNNPACK library for the dots only, so convolutions go
to Eigen (YNNPACK runs CaffeNet's grouped conv2 input gradient on one core). This measures that choice
side by side, interleaved, at real sizes with the suite's random weights, and prints the relative L2
distance of the two results: on random weights the DGN-AM step's code gradient is ill-conditioned in
float32 (XLA's default and PyTorch already differ by more than 100 % there), so that distance is large for
``dgn_am`` and tiny for the rest. Usage::

    python -m benchmarks.step_options [--batches 1 8 32] [--only pixel,dgn_am] [--repeats 5]
"""

from __future__ import annotations

import argparse
import functools
import os

import jax
import numpy as np

from benchmarks.suite import Nets
from benchmarks.timing import block, interleaved
from jaxviz.core.loop import step_options


def _relative_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def main() -> None:
    """Print ms per call of each workload and batch, XLA's defaults against ``step_options()``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--only", default="pixel,dgn_am")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    options = step_options()
    print(f"backend {jax.default_backend()}, {os.cpu_count()} CPUs, step_options {options or 'none (XLA defaults)'}")
    nets = Nets()
    fns = nets.jax_fns()
    for name in args.only.split(","):
        for b in args.batches:
            call_args = nets.jax_args(name, b)
            lowered = jax.jit(fns[name]).lower(*call_args)
            default, shipped = lowered.compile(), lowered.compile(compiler_options=options)
            distance = _relative_l2(shipped(*call_args), default(*call_args))
            res = interleaved({"default": functools.partial(lambda c: block(c(*call_args)), default),
                               "step_options": functools.partial(lambda c: block(c(*call_args)), shipped)},
                              repeats=args.repeats)
            d, s = (1000 * res[k]["median_s"] for k in ("default", "step_options"))
            print(f"{name} b{b}: default {d:.1f} ms, step_options {s:.1f} ms, ratio {s / d:.3f}, "
                  f"relative L2 distance {distance:.1e}, load {res['default']['load_before'][0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
