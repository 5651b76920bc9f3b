"""Time of one DGN-AM step (G forward, CaffeNet forward to fc8, both backward, update) at real sizes.

Also times a pixel-space step on CaffeNet alone (part ``caffenet``), the network part of the step.

Runs the real architectures (CaffeNet 227x227, the 4096-code fc6 generator) with random weights — speed
does not depend on the values — at batch 1 and 8, and measures side by side in the same process:

- ``jaxviz``: the layer implementations jaxviz ships (grouped conv split per group, strided deconvolution
  split per output phase);
- ``xla-direct``: the same network with the direct XLA forms (``feature_group_count``, ``lhs_dilation``),

so the ratio between them is a like-for-like figure on the machine at hand. Usage::

    python benchmarks/dgn_am_step.py [--batches 1 8] [--steps 10] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks.output import refuse_existing, write_json
from jaxviz import recipes
from jaxviz.core import objectives
from jaxviz.models import CaffeNet, CaffeNetConfig, Generator, GeneratorConfig, layers
from jaxviz.models.model import Model
from jaxviz.core.loop import Method, compiled_run
from jaxviz.core.updates import normalized_gradient_ascent
from jaxviz.core.params import Pixels


def random_params(module, example: jax.Array, taps: tuple[str, ...], seed: int = 0) -> dict:
    """Parameters shaped like ``module.init``'s, filled by numpy (fast: no per-parameter compilation)."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), example, taps))["params"]
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(0, 0.01, s.shape).astype(np.float32)), shapes)


def _direct_conv2d(x, kernel, bias, stride=(1, 1), pad=(0, 0), dilation=(1, 1), groups=1):
    y = lax.conv_general_dilated(x, kernel, tuple(stride), [(pad[0], pad[0]), (pad[1], pad[1])],
                                 rhs_dilation=tuple(dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                 feature_group_count=groups)
    return y if bias is None else y + bias


def _direct_deconv2d(x, kernel, bias, stride=(1, 1), pad=(0, 0), dilation=(1, 1), groups=1):
    kh, kw = kernel.shape[:2]
    eff = [dilation[0] * (kh - 1), dilation[1] * (kw - 1)]
    y = lax.conv_general_dilated(x, kernel, (1, 1), [(eff[0] - pad[0],) * 2, (eff[1] - pad[1],) * 2],
                                 lhs_dilation=tuple(stride), rhs_dilation=tuple(dilation),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
    return y if bias is None else y + bias


@contextlib.contextmanager
def layer_variant(name: str) -> Iterator[None]:
    """Temporarily swap the convolution implementations (traced code reads them at trace time)."""
    saved = layers.conv2d, layers.deconv2d
    if name == "xla-direct":
        layers.conv2d, layers.deconv2d = _direct_conv2d, _direct_deconv2d
    try:
        yield
    finally:
        layers.conv2d, layers.deconv2d = saved


def time_steps(classifier: Model, generator: Model | None, batch: int, steps: int, repeats: int) -> dict:
    """Seconds per step for ``batch`` runs at once (best of ``repeats``), and the first call's time.

    With a generator the step is DGN-AM's; without one it is pixel-space ascent on CaffeNet alone.
    """
    objective = objectives.unit("fc8")
    if generator is not None:
        preset = recipes.dgn_am(generator, steps=steps)
        param, method, aux = preset.param, preset.method, preset.aux_params
    else:
        param, method, aux = Pixels((227, 227, 3)), Method(steps, normalized_gradient_ascent(1.0)), None
    run = compiled_run(classifier.function, objective, param, method, True, False)
    keys = jax.random.split(jax.random.key(0), batch)
    targets = jnp.arange(batch, dtype=jnp.int32) % 1000
    t0 = time.perf_counter()
    jax.block_until_ready(run(classifier.params, aux, targets, keys))
    compile_s = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run(classifier.params, aux, targets, keys))
        best = min(best, time.perf_counter() - t0)
    compiled_run.cache_clear()  # the next variant must trace again
    return {"batch": batch, "steps": steps, "seconds_per_step": best / steps, "first_call_s": compile_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["jaxviz", "xla-direct"])
    parser.add_argument("--parts", nargs="+", default=["dgn_am", "caffenet"],
                        help="dgn_am: G + CaffeNet step; caffenet: pixel-space step on CaffeNet alone")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    refuse_existing(parser, [args.json], "--json")

    c_module, g_module = CaffeNet(CaffeNetConfig()), Generator(GeneratorConfig())
    classifier = Model("caffenet", c_module, random_params(c_module, jnp.zeros((1, 227, 227, 3)), ("fc8",)), {})
    generator = Model("generator", g_module, random_params(g_module, jnp.zeros((1, 4096)), ("deconv0",)),
                      {})
    machine = {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
               "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}
    rows = []
    for part in args.parts:
        for batch in args.batches:
            for variant in args.variants:
                with layer_variant(variant):
                    row = {"part": part, "variant": variant,
                           **time_steps(classifier, generator if part == "dgn_am" else None, batch, args.steps,
                                        args.repeats)}
                rows.append(row)
                print(f"{part:8s} batch {batch:3d}  {variant:10s}  {1000 * row['seconds_per_step']:9.1f} ms/step"
                      f"   (first call {row['first_call_s']:.1f} s)", flush=True)
            same = [r for r in rows if r["batch"] == batch and r["part"] == part]
            if len(same) == 2:
                print(f"{part:8s} batch {batch:3d}  time ratio {same[0]['variant']} / {same[1]['variant']}: "
                      f"{same[0]['seconds_per_step'] / same[1]['seconds_per_step']:.2f}")
    print(f"machine: {machine}")
    if args.json:
        write_json(args.json, {"machine": machine, "rows": rows}, indent=2)


if __name__ == "__main__":
    main()
