"""Where the time goes: every CaffeNet and generator layer alone, jaxviz against eager PyTorch.

For each layer at its real input shape (CaffeNet 227, the fc6 generator 4096 -> 256) and each batch, times
the forward and the vjp with respect to the input (forward + input gradient, the only gradient activation
maximization takes; the weights are constants) for jaxviz's form, eager PyTorch, and optionally jaxviz's
alternative forms of the same layer (``--forms``), interleaved, medians (and minima, and process CPU time
per call); ``torch1`` is eager PyTorch with one thread. Usage::

    python -m benchmarks.layer_profile [--batches 8] [--repeats 7] [--net caffenet,generator]
        [--layers conv1,pool1] [--forms] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.output import refuse_existing, write_json
from benchmarks.timing import block, interleaved, machine
from jaxviz.core.loop import step_options
from jaxviz.models import layers


def _rand(shape, seed=0, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).normal(0, scale, shape).astype(np.float32))


def caffenet_layers(batch: int) -> list[dict]:
    """(name, jaxviz fn(x, *w), torch fn(x, *w), input shape NHWC, weight shapes (HWIO), extra)."""
    L = []
    def conv(name, shape, cout, k, s, p, g):
        L.append(dict(name=name, kind="conv", shape=(batch, *shape), kernel=(k, k, shape[-1] // g, cout),
                      stride=s, pad=p, group=g))
    conv("conv1", (227, 227, 3), 96, 11, 4, 0, 1)
    L.append(dict(name="pool1", kind="pool", shape=(batch, 55, 55, 96)))
    L.append(dict(name="norm1", kind="lrn", shape=(batch, 27, 27, 96)))
    conv("conv2", (27, 27, 96), 256, 5, 1, 2, 2)
    L.append(dict(name="pool2", kind="pool", shape=(batch, 27, 27, 256)))
    L.append(dict(name="norm2", kind="lrn", shape=(batch, 13, 13, 256)))
    conv("conv3", (13, 13, 256), 384, 3, 1, 1, 1)
    conv("conv4", (13, 13, 384), 384, 3, 1, 1, 2)
    conv("conv5", (13, 13, 384), 256, 3, 1, 1, 2)
    L.append(dict(name="pool5", kind="pool", shape=(batch, 13, 13, 256)))
    L.append(dict(name="fc6", kind="fc", shape=(batch, 9216), out=4096))
    L.append(dict(name="fc7", kind="fc", shape=(batch, 4096), out=4096))
    L.append(dict(name="fc8", kind="fc", shape=(batch, 4096), out=1000))
    return L


def generator_layers(batch: int) -> list[dict]:
    from jaxviz.models import GeneratorConfig
    from jaxviz.models.generator import DECONV_LAYERS, FC_LAYERS
    cfg = GeneratorConfig()
    L = [dict(name=n, kind="fc", shape=(batch, 4096), out=4096) for n in FC_LAYERS]
    c, h, w = cfg.reshape
    for name, s in zip(DECONV_LAYERS, cfg.deconvs):
        L.append(dict(name=name, kind="deconv", shape=(batch, h, w, c), kernel=(s.kernel, s.kernel, c, s.features),
                      stride=s.stride, pad=s.pad, group=1))
        h = s.stride * (h - 1) + s.kernel - 2 * s.pad
        w, c = h, s.features
    return L


def jax_fn(spec: dict, form: str | None = None) -> tuple[Callable, tuple]:
    """The jaxviz function of a layer (x, *weights) and its weights."""
    kind = spec["kind"]
    if kind in ("conv", "deconv"):
        k = _rand(spec["kernel"], 1, 0.01)
        b = _rand(spec["kernel"][-1:], 2, 0.01)
        op = layers.conv2d if kind == "conv" else layers.deconv2d
        s, p, g = (spec["stride"],) * 2, (spec["pad"],) * 2, spec["group"]
        kwargs = {} if form is None else {"form": form}
        return (lambda x, k, b: op(x, k, b, s, p, (1, 1), g, **kwargs)), (k, b)
    if kind == "pool":
        return (lambda x: layers.max_pool(x, (3, 3), (2, 2))), ()
    if kind == "lrn":
        return (lambda x: layers.lrn_across_channels(x, 5, 1e-4, 0.75, 1.0)), ()
    if kind == "fc":
        k = _rand((spec["shape"][-1], spec["out"]), 1, 0.01)
        b = _rand((spec["out"],), 2, 0.01)
        kwargs = {} if form is None else {"form": form}
        return (lambda x, k, b: layers.dense(x, k, b, **kwargs)), (k, b)
    raise ValueError(kind)


def torch_fn(spec: dict):
    import torch
    import torch.nn.functional as F
    kind = spec["kind"]
    torch.manual_seed(0)
    if kind == "conv":
        kh, kw, ci, co = spec["kernel"]
        w, b = torch.randn(co, ci, kh, kw) * 0.01, torch.randn(co) * 0.01
        return lambda x: F.conv2d(x, w, b, spec["stride"], spec["pad"], groups=spec["group"])
    if kind == "deconv":
        kh, kw, ci, co = spec["kernel"]
        w, b = torch.randn(ci, co, kh, kw) * 0.01, torch.randn(co) * 0.01
        return lambda x: F.conv_transpose2d(x, w, b, spec["stride"], spec["pad"])
    if kind == "pool":
        return lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True)
    if kind == "lrn":
        return lambda x: F.local_response_norm(x, 5, 1e-4, 0.75, 1.0)
    if kind == "fc":
        w, b = torch.randn(spec["out"], spec["shape"][-1]) * 0.01, torch.randn(spec["out"]) * 0.01
        return lambda x: F.linear(x, w, b)
    raise ValueError(kind)


def _torch_shape(shape):
    return shape if len(shape) == 2 else (shape[0], shape[3], shape[1], shape[2])


def layer_variants(spec: dict, forms: list[str | None]) -> dict[str, Callable[[], object]]:
    """Zero-argument callables: jaxviz (each form) forward and vjp, torch forward and forward+backward."""
    import torch
    out = {}
    x = _rand(spec["shape"], 3, 10.0)
    for form in forms:
        f, w = jax_fn(spec, form)
        fwd = jax.jit(f, compiler_options=step_options())   # as a run's step compiles it
        y = fwd(x, *w)
        ct = _rand(y.shape, 4)

        def vjp(x, ct, *w, f=f):  # the output too: a linear layer's input gradient would not need it
            y, back = jax.vjp(lambda v: f(v, *w), x)
            return y, back(ct)[0]
        vjp = jax.jit(vjp, compiler_options=step_options())
        tag = "jaxviz" if form is None else f"jaxviz[{form}]"
        out[f"{tag} fwd"] = functools.partial(lambda fwd, x, w: block(fwd(x, *w)), fwd, x, w)
        out[f"{tag} vjp"] = functools.partial(lambda vjp, x, ct, w: block(vjp(x, ct, *w)), vjp, x, ct, w)
    tf = torch_fn(spec)
    xt = torch.randn(*_torch_shape(spec["shape"])) * 10.0
    xg = xt.clone().requires_grad_(True)
    yt = tf(xt)
    ctt = torch.randn(*yt.shape)

    def t_fwd():
        with torch.no_grad():
            return tf(xt)

    def t_vjp():
        y = tf(xg)
        return y, torch.autograd.grad(y, xg, ctt)[0]
    out["torch fwd"], out["torch vjp"] = t_fwd, t_vjp
    out["torch1 fwd"], out["torch1 vjp"] = _one_thread(t_fwd), _one_thread(t_vjp)
    return out


def _one_thread(fn):
    import torch

    def call():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(n)
    return call


def forms_for(spec: dict) -> list[str | None]:
    """jaxviz's default (None) and every alternative form of this layer kind."""
    extra = list(getattr(layers, "FORMS", {}).get("dense" if spec["kind"] == "fc" else spec["kind"], ()))
    if spec.get("group", 1) == 1 and "split" in extra:
        extra.remove("split")
    if spec.get("stride", 1) == 1:
        extra = [f for f in extra if not f.startswith("s2d")]
    return [None, *extra]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="8")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--net", default="caffenet,generator")
    parser.add_argument("--layers", default="")
    parser.add_argument("--forms", action="store_true", help="also time jaxviz's alternative forms")
    parser.add_argument("--json")
    args = parser.parse_args()
    refuse_existing(parser, [args.json], "--json")
    import torch
    torch.set_grad_enabled(True)
    rows = []
    wanted = set(filter(None, args.layers.split(",")))
    for batch in map(int, args.batches.split(",")):
        specs = []
        if "caffenet" in args.net:
            specs += caffenet_layers(batch)
        if "generator" in args.net:
            specs += generator_layers(batch)
        for spec in specs:
            if wanted and spec["name"] not in wanted:
                continue
            forms = forms_for(spec) if args.forms else [None]
            res = interleaved(layer_variants(spec, forms), repeats=args.repeats)
            row = {"batch": batch, "layer": spec["name"],
                   **{k: round(1000 * v["median_s"], 2) for k, v in res.items()},
                   "min_ms": {k: round(1000 * v["min_s"], 2) for k, v in res.items()},
                   "cpu_ms": {k: round(1000 * v["cpu_median_s"], 2) for k, v in res.items()},
                   "load": [next(iter(res.values()))["load_before"], next(iter(res.values()))["load_after"]]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        write_json(args.json, {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
