"""One layer's form changed at a time, inside the whole step: which form wins where it is used.

Times the CaffeNet pixel step (forward + input gradient + update) and the DGN-AM step with jaxviz's
default forms and with one layer forced to another form (``conv_form`` / ``deconv_form`` patched at trace
time for that layer's kernel shape), interleaved, medians and minima::

    python -m benchmarks.form_ablation --workload pixel --batches 1,8 --layer conv1 --forms direct,s2d,s2d_im2col
    python -m benchmarks.form_ablation --workload dgn_am --batches 8,32 --layer fc --forms dot,conv

Each step compiles with the options a run's step gets (``core.loop.step_options``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json

import jax

from benchmarks.suite import Nets
from benchmarks.timing import block, interleaved
from jaxviz.core.loop import step_options
from jaxviz.models import layers

KERNELS = {"conv1": (11, 11, 3, 96), "conv2": (5, 5, 48, 256), "conv3": (3, 3, 256, 384),
           "conv4": (3, 3, 192, 384), "conv5": (3, 3, 192, 256),
           "deconv5": (4, 4, 256, 256), "conv5_1": (3, 3, 256, 512), "deconv4": (4, 4, 512, 256),
           "conv4_1": (3, 3, 256, 256), "deconv3": (4, 4, 256, 128), "conv3_1": (3, 3, 128, 128),
           "deconv2": (4, 4, 128, 64), "deconv1": (4, 4, 64, 32), "deconv0": (4, 4, 32, 3)}


@contextlib.contextmanager
def forced(layer: str | None, form: str | None):
    """Force ``form`` for the convolution/deconvolution whose kernel has ``layer``'s shape (``layer="pool"``:
    every max pooling; ``layer="fc"``: every fully connected layer; ``form="legacy"``: every layer in the
    forms jaxviz used before this suite)."""
    saved = layers.conv_form, layers.deconv_form, layers.POOL_FORM, layers.dense_form
    if layer == "pool" and form:
        layers.POOL_FORM = form
    elif layer == "fc" and form:
        layers.dense_form = lambda x_shape: form
    elif form == "legacy":   # the forms before the speed work: per-group split, per-phase deconvolutions, XLA pool
        layers.conv_form = lambda x, k, s, d=(1, 1), g=1: "split" if 1 < g <= 16 else "direct"
        layers.deconv_form = lambda x, k, s, d=(1, 1), g=1: "phases" if tuple(s) != (1, 1) else "direct"
        layers.POOL_FORM = "xla"
        layers.dense_form = lambda x_shape: "dot"
    elif layer and form:
        shape = KERNELS[layer]
        kind = "deconv" if layer.startswith("deconv") or layer.endswith("_1") else "conv"

        def patch(orig):
            def choose(x_shape, kernel_shape, *a, **k):
                return form if tuple(kernel_shape) == shape else orig(x_shape, kernel_shape, *a, **k)
            return choose
        if kind == "conv":
            layers.conv_form = patch(saved[0])
        else:
            layers.deconv_form = patch(saved[1])
    try:
        yield
    finally:
        layers.conv_form, layers.deconv_form, layers.POOL_FORM, layers.dense_form = saved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", default="pixel")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--layer", default="conv1")
    p.add_argument("--forms", default="direct,s2d,s2d_im2col")
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args()
    nets = Nets()
    fn = nets.jax_fns()[args.workload]
    for b in map(int, args.batches.split(",")):
        a = nets.jax_args(args.workload, b)
        variants = {}
        for form in [None, *args.forms.split(",")]:
            with forced(args.layer, form):
                # a new function each time: JAX reuses a traced function's jaxpr, and the forms are read
                # at trace time
                c = jax.jit(lambda *v: fn(*v)).lower(*a).compile(compiler_options=step_options())
            variants[form or "default"] = functools.partial(lambda c, a: block(c(*a)), c, a)
        res = interleaved(variants, repeats=args.repeats)
        print(json.dumps({"workload": args.workload, "batch": b, "layer": args.layer,
                          "median_ms": {k: round(1000 * v["median_s"], 1) for k, v in res.items()},
                          "min_ms": {k: round(1000 * v["min_s"], 1) for k, v in res.items()},
                          "cpu_ms": {k: round(1000 * v["cpu_median_s"], 1) for k, v in res.items()},
                          "load": [res["default"]["load_before"], res["default"]["load_after"]]}), flush=True)


if __name__ == "__main__":
    main()
