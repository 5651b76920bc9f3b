"""jaxviz's benchmark suite: the device ceiling, the networks and steps against eager PyTorch, torch.compile
and Lucent, sweep throughput, compile time, peak memory and the inverse-set workload, in one run.

Everything compared is measured in one process, the variants of each figure interleaved (``timing``),
medians of ``--repeats`` rounds, with the machine's load before and after beside every figure. Real sizes
(CaffeNet 227x227, the 4096-code fc6 generator -> 256x256, crop 227), random weights (speed does not
depend on the values), the PyTorch twins holding the same weights (``torch_nets``). Pieces (``--only``):

- ``ceiling``: a 2048^3 float32 matmul (and bfloat16), GFLOP/s, JAX and PyTorch (8192^3 off CPU);
- ``caffenet_fwd``, ``pixel`` (CaffeNet forward + input gradient + normalized step), ``generator_fwd``,
  ``generator_vjp``, ``dgn_am`` (G, crop, CaffeNet to fc8, both backward, DGN-AM's update, clip, decay):
  ms, images/s, XLA's GFLOP (``cost_analysis``), GFLOP/s and fraction of the ceiling (the ceiling's matmul
  timed in the same rounds, when ``ceiling`` is asked for too); jaxviz, eager
  PyTorch, torch.compile (``--no-torch-compile`` leaves it out), and the ratio jaxviz / eager;
  ``dgn_am`` and ``pixel`` also through jaxviz's own loop (``compiled_run``, per step);
- ``lucent``: Lucent rendering channel objectives with its default Fourier, decorrelated image (and its
  ``upconvGAN`` with our random generator weights) against ``recipes.lucid`` on the same network, one
  image and a batch of 8 channels;
- ``sweep``: DGN-AM units/s against chunk size through ``compiled_run`` (what ``jaxviz sweep`` runs);
- ``compile``: first call against steady state of ``recipes.lucid`` at batch 1 and 8 and of DGN-AM at 8
  (``COMPILE_WORKLOADS``), in fresh processes (``--compile-repeats`` of each, medians),
  without and with JAX's persistent compilation cache (cold, then warm);
- ``memory``: peak resident memory of each step per batch, each in a fresh process (measured: the
  kernel's peak-RSS mark, reset after setup and compilation, minus the resident size then), beside
  XLA's own memory analysis (in the step rows);
- ``inverse_set``: ``sample_inverse_set`` with ``InverseSetConfig(n=500, k=10)``, fc8 unit 3 in [10, 15], on
  the embedded pair (first call, with compilation, and a second one);
- ``units`` (asked for by name only): 1000 fc8 units x 200 DGN-AM steps through ``compiled_run`` in the
  sweep's chunks, results to the host (``benchmarks/gpu.sh`` runs it on a GPU).

On a GPU the PyTorch twins run on it too (``torch_device``); the Lucent piece is CPU-only.

Writes ``PREFIX.json``, ``PREFIX.md`` and ``PREFIX.png`` (``--out PREFIX``, default
``benchmarks/results/<backend>-<date>``)::

    python -m benchmarks.suite [--out benchmarks/results/quick] [--only caffenet_fwd,dgn_am] [--batches 1,8]

Lucent imports ``torchvision.transforms.Normalize`` only; torchvision's wheels for torch 2.13 do not load
beside the CPU build, so when torchvision is missing this process (only) installs a stand-in module with
that one class (see ``_torchvision_stand_in``); Lucent's ImageNet normalization is not used here.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import io
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.output import refuse_existing, write_json
from benchmarks.timing import block, interleaved, load, machine
from jaxviz.io.atomic import atomic_write_bytes

ALL = ("ceiling", "caffenet_fwd", "pixel", "generator_fwd", "generator_vjp", "dgn_am", "lucent", "sweep",
       "compile", "memory", "chunk_memory", "inverse_set", "units")
DEFAULT = tuple(p for p in ALL if p != "units")   # units: 1000 x 200 DGN-AM steps, hours on a CPU
STEPS = ("caffenet_fwd", "pixel", "generator_fwd", "generator_vjp", "dgn_am")
LR = 1.0           # pixel step: x += LR g / mean|g|
DGN_LR = 8.0       # DGN-AM's first learning rate


# ----- the workloads, in JAX ---------------------------------------------------------------------------

def random_params(module, example, taps, seed=0):
    """Parameters shaped like ``module.init``'s, filled by numpy (no per-parameter compilation)."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), example, taps))["params"]
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, 0.01, s.shape).astype(np.float32)), shapes)


class Nets:
    """The real-size CaffeNet and generator with random weights, in JAX and (lazily) PyTorch."""

    def __init__(self):
        from jaxviz.models import CaffeNet, CaffeNetConfig, Generator, GeneratorConfig
        self.c_cfg, self.g_cfg = CaffeNetConfig(), GeneratorConfig()
        self.caffenet, self.generator = CaffeNet(self.c_cfg), Generator(self.g_cfg)
        self.c_params = random_params(self.caffenet, jnp.zeros((1, 227, 227, 3)), ("fc8",))
        self.g_params = random_params(self.generator, jnp.zeros((1, 4096)), ("deconv0",), seed=1)
        self.bounds = jnp.full((4096,), 30.0)
        self._torch = None

    def torch(self):
        if self._torch is None:
            from benchmarks.torch_nets import caffenet_from_jaxviz, generator_from_jaxviz
            device = torch_device()
            self._torch = (caffenet_from_jaxviz(self.c_params, self.c_cfg).to(device),
                           generator_from_jaxviz(self.g_params, self.g_cfg).to(device))
        return self._torch

    # pure JAX functions (jitted by the caller)
    def fc8(self, p, x):
        return self.caffenet.apply({"params": p}, x, ("fc8",))["fc8"]

    def image(self, gp, h):
        return self.generator.apply({"params": gp}, h, ("deconv0",))["deconv0"]

    def jax_fns(self) -> dict[str, Callable]:
        o = self.g_cfg.crop_offset

        def caffenet_fwd(p, x):
            return self.fc8(p, x)

        def pixel(p, x, t):
            def obj(x):
                return jnp.take_along_axis(self.fc8(p, x), t[:, None], 1).sum()
            g = jax.grad(obj)(x)
            return x + LR * g / (jnp.mean(jnp.abs(g), axis=(1, 2, 3), keepdims=True) + 1e-12)

        def generator_fwd(gp, h):
            return self.image(gp, h)

        def generator_vjp(gp, h, ct):
            img, back = jax.vjp(lambda v: self.image(gp, v), h)
            return img, back(ct)[0]

        def dgn_am(p, gp, h, t, ub):
            def obj(h):
                img = self.image(gp, h)[:, o:o + 227, o:o + 227]
                return jnp.take_along_axis(self.fc8(p, img), t[:, None], 1).sum()
            g = jax.grad(obj)(h)
            h = h + DGN_LR * g / (jnp.mean(jnp.abs(g), axis=1, keepdims=True) + 1e-12)
            return jnp.clip(h, 0.0, ub) * 0.99

        return dict(caffenet_fwd=caffenet_fwd, pixel=pixel, generator_fwd=generator_fwd,
                    generator_vjp=generator_vjp, dgn_am=dgn_am)

    def jax_args(self, name: str, b: int):
        rng = np.random.default_rng(b)
        x = jnp.asarray(rng.normal(0, 30, (b, 227, 227, 3)).astype(np.float32))
        h = jnp.asarray(np.abs(rng.normal(0, 1, (b, 4096))).astype(np.float32))
        t = jnp.arange(b, dtype=jnp.int32) % 1000
        ct = jnp.asarray(rng.normal(0, 1, (b, 256, 256, 3)).astype(np.float32))
        return {"caffenet_fwd": (self.c_params, x), "pixel": (self.c_params, x, t),
                "generator_fwd": (self.g_params, h), "generator_vjp": (self.g_params, h, ct),
                "dgn_am": (self.c_params, self.g_params, h, t, self.bounds)}[name]

    def torch_fns(self, b: int, compiled: bool = False) -> dict[str, Callable[[], Any]]:
        import torch
        net, gen = self.torch()
        if compiled:
            net, gen = torch.compile(net), torch.compile(gen)
        rng = np.random.default_rng(b)
        device = torch_device()
        x = torch.from_numpy(rng.normal(0, 30, (b, 3, 227, 227)).astype(np.float32)).to(device)
        h = torch.from_numpy(np.abs(rng.normal(0, 1, (b, 4096))).astype(np.float32)).to(device)
        t = (torch.arange(b) % 1000).to(device)
        ct = torch.from_numpy(rng.normal(0, 1, (b, 3, 256, 256)).astype(np.float32)).to(device)
        o = self.g_cfg.crop_offset

        def caffenet_fwd():
            with torch.no_grad():
                return net(x)

        def pixel():
            xg = x.detach().requires_grad_(True)
            obj = net(xg).gather(1, t[:, None]).sum()
            g, = torch.autograd.grad(obj, xg)
            with torch.no_grad():
                return x + LR * g / (g.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-12)

        def generator_fwd():
            with torch.no_grad():
                return gen(h)

        def generator_vjp():
            hg = h.detach().requires_grad_(True)
            img = gen(hg)
            return img, torch.autograd.grad(img, hg, ct)[0]

        def dgn_am():
            hg = h.detach().requires_grad_(True)
            img = gen(hg)[:, :, o:o + 227, o:o + 227]
            obj = net(img).gather(1, t[:, None]).sum()
            g, = torch.autograd.grad(obj, hg)
            with torch.no_grad():
                hn = h + DGN_LR * g / (g.abs().mean(dim=1, keepdim=True) + 1e-12)
                return hn.clamp(0.0, 30.0) * 0.99

        fns = dict(caffenet_fwd=caffenet_fwd, pixel=pixel, generator_fwd=generator_fwd,
                   generator_vjp=generator_vjp, dgn_am=dgn_am)
        return {name: functools.partial(lambda f: torch_done(f()), f) for name, f in fns.items()}


def torch_device() -> str:
    """Where the PyTorch twins run: the GPU where JAX runs on one and PyTorch sees it, else the CPU."""
    import torch
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_done(value):
    """``value`` once PyTorch's queued GPU work is done (on CPU, PyTorch's calls are synchronous)."""
    import torch
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return value


def xla_cost(fn, args) -> tuple[Any, float | None, dict]:
    """(compiled executable, XLA's GFLOP for one call, XLA's memory analysis in MB), compiled as a run's step."""
    from jaxviz.core.loop import step_options  # what the library's own steps compile with
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile(compiler_options=step_options())
    compile_s = time.perf_counter() - t0
    gflop = None
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        gflop = float(cost.get("flops", 0.0)) / 1e9 or None
    except Exception:  # noqa: BLE001  (not every backend reports it)
        pass
    mem = {}
    try:
        m = compiled.memory_analysis()
        mem = {k: round(getattr(m, k) / 2**20, 1) for k in
               ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")}
    except Exception:  # noqa: BLE001
        pass
    return compiled, gflop, {"compile_s": round(compile_s, 2), **mem}


# ----- pieces ------------------------------------------------------------------------------------------

def ceiling_size() -> int:
    """The ceiling matmul's size: 2048 on CPU (a few hundred ms); 8192 on an accelerator, where a smaller
    product is too short to fill the device (an H100 does 2048^3 in well under a millisecond)."""
    return 2048 if jax.default_backend() == "cpu" else 8192


def matmul_call(n: int | None = None, dtype: str = "float32") -> Callable[[], Any]:
    """A zero-argument call of a jitted ``n``^3 matmul in JAX (compiled and run once here): the ceiling's op."""
    n = n or ceiling_size()
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), dtype)
    f = jax.jit(lambda a, b: a @ b)
    block(f(a, a))
    return functools.partial(lambda f, a: block(f(a, a)), f, a)


def matmul_gflops(seconds: float, n: int | None = None) -> float:
    """GFLOP/s of one ``n``^3 matmul (default ``ceiling_size()``) that took ``seconds``."""
    n = n or ceiling_size()
    return round(2 * n**3 / seconds / 1e9, 1)


def ceiling(repeats: int) -> dict:
    """GFLOP/s of a large matmul: the most this device does with one XLA op (float32, bfloat16)."""
    n = ceiling_size()
    out = {}
    variants = {}
    for dtype in ("float32", "bfloat16"):
        try:
            variants[f"jax_{dtype}"] = matmul_call(n, dtype)
        except Exception as e:  # noqa: BLE001
            out[f"jax_{dtype}"] = {"error": str(e)[:200]}
    try:
        import torch
        device = torch_device()
        ta = torch.randn(n, n, device=device)
        variants["torch_float32"] = lambda: torch_done(ta @ ta)
        if device == "cuda":
            # (on a CPU without native bf16, PyTorch's bfloat16 matmul takes minutes at this size: left out)
            tb = ta.to(torch.bfloat16)
            variants["torch_bfloat16"] = lambda: torch_done(tb @ tb)
    except ImportError:
        pass
    res = interleaved(variants, repeats=repeats, warmup=2)
    for k, v in res.items():
        out[k] = {"ms": round(1000 * v["median_s"], 2), "gflops": matmul_gflops(v["median_s"], n),
                  "load": [v["load_before"], v["load_after"]]}
    return out


def _one_thread(fn):
    """Run a PyTorch callable with one intra-op thread (then restore): on a machine whose cores are shared,
    OpenMP's barriers wait for descheduled threads, and one thread can be the faster eager baseline."""
    import torch

    def call():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(n)
    return call


def steps(nets: Nets, names, batches, repeats, torch_compile: bool, matmul: Callable[[], Any] | None,
          with_loop: bool = True, torch_one_thread: bool = True, large_repeats: int = 3,
          compile_batches=(1, 8)) -> list[dict]:
    """Every workload at every batch: jaxviz, eager PyTorch, torch.compile (and jaxviz's loop), interleaved.

    With ``matmul`` (``matmul_call()``), the ceiling's matmul runs in the same rounds, and each fraction
    of the ceiling divides by the GFLOP/s it reached there: on a shared machine its speed changes by the minute
    (one 2-core VM gave 82 GFLOP/s in the suite's first piece and 132 a quarter of an hour later), so a
    ceiling measured once, at the start, makes every later fraction read high or low.
    """
    rows = []
    fns = nets.jax_fns()
    for b in batches:
        torch_eager = nets.torch_fns(b) if _have_torch() else {}
        torch_comp = (nets.torch_fns(b, compiled=True) if torch_compile and _have_torch() and b in compile_batches
                      else {})
        for name in names:
            args = nets.jax_args(name, b)
            compiled, gflop, mem = xla_cost(fns[name], args)
            t0 = time.perf_counter()
            block(compiled(*args))
            first_s = time.perf_counter() - t0 + mem["compile_s"]
            variants = {"jaxviz": functools.partial(lambda c, a: block(c(*a)), compiled, args)}
            if name in torch_eager:
                variants["torch"] = torch_eager[name]
                if torch_one_thread and torch_device() == "cpu":
                    variants["torch 1 thread"] = _one_thread(torch_eager[name])
            extra = {}
            if name in torch_comp:
                t0 = time.perf_counter()
                torch_comp[name]()
                extra["torch_compile_first_call_s"] = round(time.perf_counter() - t0, 1)
                variants["torch.compile"] = torch_comp[name]
            loop_steps = 3
            if with_loop and name in ("pixel", "dgn_am") and b in compile_batches:
                run, run_args = _library_run(nets, name, b, loop_steps)
                t0 = time.perf_counter()
                block(run(*run_args))
                extra["jaxviz_loop_first_call_s"] = round(time.perf_counter() - t0, 1)
                variants["jaxviz loop"] = functools.partial(lambda r, a: block(r(*a)), run, run_args)
            if matmul is not None:
                variants["matmul"] = matmul
            res = interleaved(variants, repeats=repeats if b < 32 else large_repeats)
            ceiling_gflops = matmul_gflops(res.pop("matmul")["median_s"]) if matmul is not None else None
            row = {"workload": name, "batch": b, "xla_gflop": gflop and round(gflop, 2),
                   "jaxviz_first_call_s": round(first_s, 2), "xla_memory_mb": mem, **extra,
                   "ceiling_gflops_in_rounds": ceiling_gflops,
                   "load_before": res["jaxviz"]["load_before"], "load_after": res["jaxviz"]["load_after"]}
            for k, v in res.items():
                per = v["median_s"] / (loop_steps if k == "jaxviz loop" else 1)
                row[k] = {"ms": round(1000 * per, 2), "images_per_s": round(b / per, 2),
                          "samples_ms": [round(1000 * s / (loop_steps if k == "jaxviz loop" else 1), 1)
                                         for s in v["samples_s"]]}
                if gflop:
                    row[k]["gflops"] = round(gflop / per, 1)
                    if ceiling_gflops:
                        row[k]["ceiling_fraction"] = round(gflop / per / ceiling_gflops, 3)
            if "torch" in row:
                row["ratio_jaxviz_over_torch"] = round(row["jaxviz"]["ms"] / row["torch"]["ms"], 3)
            if "torch 1 thread" in row:
                row["ratio_jaxviz_over_torch_1_thread"] = round(row["jaxviz"]["ms"] / row["torch 1 thread"]["ms"], 3)
            if "torch.compile" in row:
                row["ratio_jaxviz_over_torch_compile"] = round(row["jaxviz"]["ms"] / row["torch.compile"]["ms"], 3)
            rows.append(row)
            print(_row_line(row), flush=True)
    return rows


def _library_run(nets: Nets, name: str, b: int, n_steps: int):
    """jaxviz's own loop (``compiled_run``, vmapped over ``b`` runs) for ``n_steps`` steps of DGN-AM / pixel AM."""
    from jaxviz import recipes
    from jaxviz.core import objectives
    from jaxviz.core.loop import Method, compiled_run
    from jaxviz.core.params import Pixels
    from jaxviz.core.updates import normalized_gradient_ascent
    from jaxviz.models.model import Model
    classifier = Model("caffenet", nets.caffenet, nets.c_params, {})
    if name == "dgn_am":
        generator = Model("generator", nets.generator, nets.g_params, {})
        preset = recipes.dgn_am(generator, bounds=30.0, steps=n_steps + 1)
        param, method, aux = preset.param, preset.method, preset.aux_params
    else:
        param, method, aux = Pixels((227, 227, 3)), Method(n_steps, normalized_gradient_ascent(LR)), None
    run = compiled_run(classifier.function, objectives.unit("fc8"), param, method, True, False)
    keys = jax.random.split(jax.random.key(0), b)
    targets = jnp.arange(b, dtype=jnp.int32) % 1000
    return run, (classifier.params, aux, targets, keys)


def _row_line(r: dict) -> str:
    parts = [f"{r['workload']:14s} b{r['batch']:<4d}"]
    for k in ("jaxviz", "torch", "torch 1 thread", "torch.compile", "jaxviz loop"):
        if k in r:
            parts.append(f"{k} {r[k]['ms']:8.1f} ms")
    if "ratio_jaxviz_over_torch" in r:
        parts.append(f"ratio {r['ratio_jaxviz_over_torch']:.2f}")
    if r["jaxviz"].get("gflops"):
        parts.append(f"{r['jaxviz']['gflops']:.0f} GFLOP/s")
    parts.append(f"load {r['load_before'][0]}->{r['load_after'][0]}")
    return "  ".join(parts)


def _have_torch() -> bool:
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


# ----- Lucent ------------------------------------------------------------------------------------------

def _torchvision_stand_in() -> str | None:
    """Lucent's transform module imports ``torchvision.transforms.Normalize``; with no loadable torchvision,
    put a one-class stand-in in ``sys.modules`` (this process only). Returns what was done, or None."""
    try:
        import torchvision.transforms  # noqa: F401
        return None
    except Exception:  # noqa: BLE001  (missing, or the CUDA wheel that fails to load beside CPU torch)
        pass
    import types
    import torch
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]

    class Normalize(torch.nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.mean = torch.tensor(mean).view(-1, 1, 1)
            self.std = torch.tensor(std).view(-1, 1, 1)

        def forward(self, t):
            return (t - self.mean) / self.std

    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.Normalize = Normalize
    sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tv.transforms
    return "torchvision stand-in (transforms.Normalize only) installed in the benchmark process"


def lucent_piece(nets: Nets, repeats: int, n_steps: int = 16) -> dict:
    """Per-step time of channel visualizations: Lucent (Fourier, decorrelated; and its upconvGAN code
    parameterization, the DGN-AM-like one) vs recipes.lucid, on CaffeNet conv5 channels 0..b-1.

    A whole render each call (set-up, ``n_steps`` steps, the result) over ``n_steps``: 16 steps, so the
    per-render costs weigh on each side about as they do in a real render of hundreds of steps, not 4x.
    """
    import torch
    if torch_device() != "cpu":
        return {"error": "the Lucent piece runs Lucent on the CPU only (its upconvGAN and our twins would sit "
                         "on different devices here)"}
    note = _torchvision_stand_in()
    try:
        from lucent.optvis import objectives as lobj, param as lparam, render, transform as ltr
    except Exception as e:  # noqa: BLE001
        return {"error": f"lucent did not import: {e}"}
    from jaxviz import recipes
    from jaxviz.core import objectives
    from jaxviz.core.loop import compiled_run
    from jaxviz.models.model import Model
    import dataclasses

    net, gen = nets.torch()
    mean_bgr = torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)

    class CaffeSpace(torch.nn.Module):
        """RGB in [0, 1] (Lucent's images) -> Caffe space (BGR, 0-255, mean subtracted) -> CaffeNet."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x[:, [2, 1, 0]] * 255.0 - mean_bgr)

    model = CaffeSpace(net).eval()  # frozen: the twins are built with requires_grad off
    # As a user would load it: weights that require gradients, so autograd also computes theirs.
    as_loaded = CaffeSpace(copy.deepcopy(net).requires_grad_(True)).eval()
    layer = "net_convs_4"   # conv5 (before its ReLU: the functional ReLU is not a module)
    out: dict[str, Any] = {"note": note, "steps_timed": n_steps}
    classifier = Model("caffenet", nets.caffenet, nets.c_params, {})
    for b in (1, 8):
        objective_l = sum(lobj.channel(layer, c, batch=i) for i, c in enumerate(range(b)))
        variants = {}

        def lucent_run(param_f, obj=objective_l, net_=model):
            render.render_vis(net_, obj, param_f, thresholds=(n_steps,), show_image=False, progress=False,
                              preprocess=False, fixed_image_size=227)
        variants["lucent fft"] = functools.partial(
            lucent_run, lambda b=b: lparam.image(227, batch=b, fft=True, decorrelate=True))
        variants["lucent fft, as loaded"] = functools.partial(
            lucent_run, lambda b=b: lparam.image(227, batch=b, fft=True, decorrelate=True), net_=as_loaded)
        variants["lucent fft, 1 thread"] = _one_thread(variants["lucent fft"])
        try:
            from lucent.optvis.param.gan import upconvGAN
            g = upconvGAN("fc6", pretrained=False)
            g.G.load_state_dict(_gan_state(gen, g), strict=True)

            def gan_param(b=b, g=g):
                code = (torch.randn(b, 4096) * 1.0).requires_grad_(True)
                return [code], lambda: g.visualize(code)
            variants["lucent upconvGAN"] = functools.partial(lucent_run, gan_param)
        except Exception as e:  # noqa: BLE001
            out[f"upconvGAN_b{b}"] = f"did not build: {e}"
        preset = recipes.lucid((227, 227, 3), None, steps=n_steps)
        # one image per channel: targets are conv5 channels 0..b-1
        run = compiled_run(classifier.function, objectives.channel("conv5:pre"), preset.param,
                           dataclasses.replace(preset.method, steps=n_steps), True, False)
        keys = jax.random.split(jax.random.key(0), b)
        targets = jnp.arange(b, dtype=jnp.int32)
        t0 = time.perf_counter()
        block(run(classifier.params, None, targets, keys))
        out[f"jaxviz_lucid_first_call_s_b{b}"] = round(time.perf_counter() - t0, 1)
        variants["jaxviz recipes.lucid"] = lambda run=run, keys=keys, targets=targets: block(
            run(classifier.params, None, targets, keys))
        res = interleaved(variants, repeats=max(3, repeats // 2))
        out[f"b{b}"] = {k: {"ms_per_step": round(1000 * v["median_s"] / n_steps, 1),
                            "load": [v["load_before"], v["load_after"]]} for k, v in res.items()}
        j = out[f"b{b}"]["jaxviz recipes.lucid"]["ms_per_step"]
        for k in list(out[f"b{b}"]):
            if k.startswith("lucent"):
                out[f"b{b}"][k]["ratio_jaxviz_over_this"] = round(j / out[f"b{b}"][k]["ms_per_step"], 3)
        print(f"lucent b{b}: " + json.dumps(out[f"b{b}"]), flush=True)
    return out


def _gan_state(gen, g) -> dict:
    """Our TorchGenerator's weights under upconvGAN's layer names (the same Caffe layouts)."""
    from jaxviz.models.generator import DECONV_LAYERS, FC_LAYERS
    state = {}
    for name, fc in zip(FC_LAYERS, gen.fcs):
        state[f"{name}.weight"], state[f"{name}.bias"] = fc.weight, fc.bias
    for name, d in zip(DECONV_LAYERS, gen.deconvs):
        state[f"{name}.weight"], state[f"{name}.bias"] = d.weight, d.bias
    return state


# ----- sweep throughput ---------------------------------------------------------------------------------

def sweep_piece(nets: Nets, chunks, repeats: int, n_steps: int = 3) -> list[dict]:
    """DGN-AM on fc8 units through ``compiled_run`` at each chunk size: unit-steps/s and units/s (200 steps)."""
    rows = []
    variants, firsts = {}, {}
    for c in chunks:
        run, args = _library_run(nets, "dgn_am", c, n_steps)
        t0 = time.perf_counter()
        block(run(*args))
        firsts[c] = round(time.perf_counter() - t0, 1)
        variants[f"chunk {c}"] = functools.partial(lambda r, a: block(r(*a)), run, args)
    res = interleaved(variants, repeats=max(3, repeats // 2))
    for c in chunks:
        v = res[f"chunk {c}"]
        per_step = v["median_s"] / n_steps
        rows.append({"chunk": c, "ms_per_step": round(1000 * per_step, 1),
                     "unit_steps_per_s": round(c / per_step, 2), "units_per_s_200_steps": round(c / per_step / 200, 4),
                     "first_call_s": firsts[c], "load": [v["load_before"], v["load_after"]]})
        print(f"sweep chunk {c}: {json.dumps(rows[-1])}", flush=True)
    return rows


def units_piece(nets: Nets, units: int, n_steps: int, chunk: int | None = None) -> dict:
    """DGN-AM on fc8 units ``0 .. units-1`` (one run each, ``n_steps`` steps) through ``compiled_run``, in
    chunks of the sweep's default size unless ``chunk`` is given, the short last chunk padded as the sweep
    pads it, each run's best image, objective and rank fetched to the host: a sweep's compute without its
    files. Twice: the first pass compiles, the second is the steady figure (the issue's GPU goal: 1000
    units x 200 steps in under 10 s)."""
    from jaxviz import recipes
    from jaxviz.core import objectives
    from jaxviz.core.loop import compiled_run
    from jaxviz.models.model import Model
    from jaxviz.workflows.devices import default_chunk_size, device_memory_bytes, estimate_run_bytes, step_memory
    classifier = Model("caffenet", nets.caffenet, nets.c_params, {})
    generator = Model("generator", nets.generator, nets.g_params, {})
    preset = recipes.dgn_am(generator, bounds=30.0, steps=n_steps)
    objective = objectives.unit("fc8")
    all_units = np.arange(units)
    all_keys = jax.vmap(lambda u: jax.random.fold_in(jax.random.key(0), u))(jnp.asarray(all_units))
    if chunk is None:
        chunk = default_chunk_size(estimate_run_bytes(classifier, preset, "fc8"), units, 1,
                                   device_memory_bytes(jax.devices()[0]),
                                   step_memory(classifier, preset, objective, jnp.asarray(all_units[:1] % 1000),
                                               all_keys[:1]))
    run = compiled_run(classifier.function, objective, preset.param, preset.method, True, False)

    def one_pass() -> float:
        t0 = time.perf_counter()
        results = []
        for start in range(0, units, chunk):
            idx = np.arange(start, start + chunk) % units   # the last chunk repeats runs to its full size
            r = run(classifier.params, preset.aux_params, jnp.asarray(idx % 1000, jnp.int32), all_keys[idx])
            results.append((r.best_image, r.best_objective, r.rank))
        jax.device_get(results)
        return time.perf_counter() - t0

    load_before = load()
    first = one_pass()
    second = one_pass()
    out = {"units": units, "steps": n_steps, "chunk": chunk, "chunks": -(-units // chunk),
           "first_pass_s": round(first, 2), "second_pass_s": round(second, 2),
           "unit_steps_per_s": round(units * n_steps / second, 1),
           "device": f"{jax.devices()[0].platform}:{getattr(jax.devices()[0], 'device_kind', '?')}",
           "load": [load_before, load()]}
    print(f"units: {json.dumps(out)}", flush=True)
    return out


# ----- fresh-process pieces: compile time, peak memory -----------------------------------------------------

def _child(argv: list[str], env: dict | None = None, timeout: int = 900) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.suite", *argv]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout,
                       cwd=pathlib.Path(__file__).resolve().parents[1])
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("CHILD "):
            return json.loads(line[6:])
    return {"error": (p.stderr or p.stdout)[-500:]}


COMPILE_WORKLOADS = {"recipes.lucid": (1, 8), "dgn_am": (8,)}
"""The runs whose first call the ``compile`` piece times, and at which batches (runs at once)."""


def compile_piece(batches=(1, 8), repeats: int = 1) -> list[dict]:
    """First call vs steady call of ``recipes.lucid`` and of DGN-AM (3 steps), fresh processes: no cache,
    cold cache, warm cache; each ``repeats`` times, the three modes alternating, medians reported.

    ``compiling_s`` is the first call minus the steady call of the same process: what the first call
    spends on tracing and compiling (and one-time warm-ups) rather than on running.
    """
    rows = []
    for workload, at in COMPILE_WORKLOADS.items():
        for b in (b for b in batches if b in at):
            samples: dict[str, list[dict]] = {"none": [], "cold": [], "warm": []}
            for _ in range(repeats):
                with tempfile.TemporaryDirectory() as cache:
                    for mode in samples:
                        res = _child(["--child-compile", str(b), "--child-workload", workload,
                                      "--cache", "" if mode == "none" else cache])
                        samples[mode].append(res)
                        print(f"compile {workload} b{b} cache {mode}: {json.dumps(res)}", flush=True)
            rows += [{"workload": workload, "batch": b, "cache": mode, **_median_first_calls(runs)}
                     for mode, runs in samples.items()]
    return rows


def _median_first_calls(runs: list[dict]) -> dict:
    """The medians of fresh-process first-call samples (an error, if any process failed), with the samples."""
    failed = [r for r in runs if "first_call_s" not in r]
    if failed:
        return failed[0]
    med = lambda xs: round(float(np.median(xs)), 2)
    return {"first_call_s": med([r["first_call_s"] for r in runs]),
            "steady_call_s": med([r["steady_call_s"] for r in runs]),
            "compiling_s": med([r["first_call_s"] - r["steady_call_s"] for r in runs]),
            "processes": len(runs), "samples": runs}


def child_compile(b: int, cache: str, workload: str = "recipes.lucid") -> dict:
    if cache:
        from benchmarks.cache import enable_compilation_cache
        enable_compilation_cache(cache)
    from jaxviz import recipes
    from jaxviz.core import objectives
    from jaxviz.core.loop import compiled_run
    from jaxviz.models.model import Model
    import dataclasses
    nets = Nets()
    if workload == "dgn_am":
        run, args = _library_run(nets, "dgn_am", b, 3)
    else:
        classifier = Model("caffenet", nets.caffenet, nets.c_params, {})
        preset = recipes.lucid((227, 227, 3), None, steps=3)
        run = compiled_run(classifier.function, objectives.channel("conv5:pre"), preset.param,
                           dataclasses.replace(preset.method, steps=3), True, False)
        args = (classifier.params, None, jnp.arange(b, dtype=jnp.int32), jax.random.split(jax.random.key(0), b))
    t0 = time.perf_counter()
    block(run(*args))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    block(run(*args))
    steady = time.perf_counter() - t0
    return {"first_call_s": round(first, 2), "steady_call_s": round(steady, 2), "steps": 3, "load": load()}


def memory_piece(names, batches, torch_too: bool) -> list[dict]:
    rows = []
    for b in batches:
        for name in names:
            for impl in (("jaxviz", "torch") if torch_too else ("jaxviz",)):
                res = _child(["--child-memory", f"{impl}:{name}:{b}"])
                rows.append({"workload": name, "batch": b, "impl": impl, **res})
                print(f"memory {impl} {name} b{b}: {json.dumps(res)}", flush=True)
    return rows


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child_memory(spec: str) -> dict:
    impl, name, b = spec.split(":")
    b = int(b)
    nets = Nets()
    if impl == "torch":
        fn = nets.torch_fns(b)[name]
    else:
        args = nets.jax_args(name, b)
        compiled = jax.jit(nets.jax_fns()[name]).lower(*args).compile()
        fn = functools.partial(lambda c, a: block(c(*a)), compiled, args)
    before = _rss_mb()   # after setup (and XLA's compilation), before the first call
    reset = _reset_peak_rss()
    for _ in range(2):
        out = fn()
        del out
    peak = _peak_rss_mb() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss_before_mb": round(before, 1), "peak_rss_mb": round(peak, 1),
            "peak_minus_before_mb": round(peak - before, 1),
            "peak_is": "VmHWM after a reset (clear_refs 5)" if reset else "ru_maxrss of the whole process"}


def chunk_memory_piece(nets: Nets, chunks=(1, 4, 16)) -> list[dict]:
    """Memory of a sweep's step per run in a chunk, by XLA's buffer assignment, against the sweep's estimate.

    The step a sweep runs (``compiled_parts``, vmapped over the runs of a chunk) on CaffeNet's fc8, compiled
    at each chunk size; its temporaries, arguments and outputs as XLA allocates them, the bytes each further
    run adds (between the smallest and the largest chunk), and ``devices.estimate_run_bytes``, which the
    default chunk size divides the free memory by.
    """
    from jaxviz import recipes
    from jaxviz.core import objectives
    from jaxviz.core.loop import compiled_parts
    from jaxviz.models.model import Model
    from jaxviz.workflows.devices import choose_chunk_size, device_memory_bytes, estimate_run_bytes, step_buffers
    classifier = Model("caffenet", nets.caffenet, nets.c_params, {})
    generator = Model("generator", nets.generator, nets.g_params, {})
    presets = {"dgn_am": recipes.dgn_am(generator, bounds=30.0, steps=5),
               "lucid": recipes.lucid((227, 227, 3), None, steps=5)}
    rows = []
    for name, preset in presets.items():
        parts = compiled_parts(classifier.function, objectives.unit("fc8"), preset.param, preset.method, True, False)
        sizes = {}
        targets, keys = jnp.arange(max(chunks), dtype=jnp.int32), jax.random.split(jax.random.key(0), max(chunks))
        for n in chunks:
            m = step_buffers(parts, classifier.params, preset.aux_params, targets, keys, n)
            sizes[n] = {"temp_mb": m.temp_size_in_bytes / 2**20, "argument_mb": m.argument_size_in_bytes / 2**20,
                        "output_mb": m.output_size_in_bytes / 2**20}
        lo, hi = min(chunks), max(chunks)
        per_run = sum(sizes[hi][k] - sizes[lo][k] for k in sizes[hi]) / (hi - lo)
        estimate = estimate_run_bytes(classifier, preset, "fc8") / 2**20
        free = device_memory_bytes(jax.devices()[0])
        rows.append({"preset": name, "by_chunk": {n: {k: round(v, 1) for k, v in d.items()} for n, d in sizes.items()},
                     "xla_mb_per_run": round(per_run, 1), "estimate_mb_per_run": round(estimate, 1),
                     "estimate_over_xla": round(estimate / per_run, 2), "free_mb": round(free / 2**20),
                     "default_chunk": choose_chunk_size(int(estimate * 2**20), 10**6, 1, free, cap=10**6),
                     "chunk_by_xla": choose_chunk_size(int(per_run * 2**20), 10**6, 1, free, cap=10**6)})
        print(f"chunk memory {name}: {json.dumps(rows[-1])}", flush=True)
    return rows


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ``clear_refs``), so setup does not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ----- inverse sets -------------------------------------------------------------------------------------

def inverse_set_piece() -> dict:
    import jaxviz.models as jm
    from jaxviz.inverse_set import Constraint, InverseSetConfig, sample_inverse_set
    classifier, generator = jm.load("caffenet"), jm.load("generator")
    constraint = Constraint("fc8", 3, 10.0, 15.0)
    out = {"config": "InverseSetConfig(n=500, k=10), fc8[3] in [10, 15], embedded pair", "load_before": load()}
    for i, tag in enumerate(("first_call_s", "second_call_s")):
        t0 = time.perf_counter()
        r = sample_inverse_set(classifier, generator, constraint, jax.random.key(i), InverseSetConfig(n=500, k=10))
        del r  # the sampler returns host arrays: its work is done
        out[tag] = round(time.perf_counter() - t0, 1)
    out["load_after"] = load()
    print(f"inverse_set: {json.dumps(out)}", flush=True)
    return out


# ----- report ----------------------------------------------------------------------------------------------

def report_paths(prefix: pathlib.Path) -> list[pathlib.Path]:
    """``<prefix>.json``, ``<prefix>.md``, ``<prefix>.png``."""
    return [prefix.with_name(prefix.name + ext) for ext in (".json", ".md", ".png")]


def write_report(prefix: pathlib.Path, data: dict) -> list[pathlib.Path]:
    """``<prefix>.json``, ``<prefix>.md`` and, when steps were timed, ``<prefix>.png`` (the folder is created)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = report_paths(prefix)
    write_json(paths[0], data)   # whole files: a run stopped mid-write leaves the last whole report
    atomic_write_bytes(paths[1], markdown(data).encode())
    if not data.get("steps"):   # the plot shows the steps alone: without them it would be an empty frame
        return paths[:2]
    try:
        plot(data, paths[2])
    except Exception as e:  # noqa: BLE001  (matplotlib missing: the JSON and table still stand)
        print(f"no plot: {e}")
        paths.pop()
    return paths


def markdown(data: dict) -> str:
    m = data["machine"]
    lines = [f"# jaxviz benchmark suite, {data['date']}", "",
             f"Machine: {m.get('cpu_model', m.get('processor'))}, {m['cpus']} cores, {m['platform']}; "
             f"JAX {m['jax']} ({', '.join(m['devices'])}), PyTorch {m.get('torch', '-')} "
             f"({m.get('torch_threads', '-')} threads); load before {data['load_before']}, after "
             f"{data.get('load_after')}.", "",
             f"Medians of {data['args']['repeats']} interleaved rounds; ratio = jaxviz / eager PyTorch "
             f"(below 1: jaxviz faster). Command: `{data['command']}`", ""]
    data = dict(data)
    for key in ("ceiling", "steps", "lucent", "sweep", "compile", "memory", "chunk_memory", "inverse_set"):
        if isinstance(data.get(key), dict) and "error" in data[key] and len(data[key]) == 1:
            lines += [f"## {key}: not measured", "", f"`{data.pop(key)['error']}`", ""]
    if "ceiling" in data:
        lines += ["## Device ceiling (2048^3 matmul)", "", "Measured first; the steps' fractions of the ceiling divide by "
                  "the float32 matmul timed again in their own rounds.", "",
                  "| variant | ms | GFLOP/s |", "| --- | --- | --- |"]
        for k, v in data["ceiling"].items():
            lines.append(f"| {k} | {v.get('ms', '-')} | {v.get('gflops', v.get('error', '-'))} |")
        lines.append("")
    if data.get("steps"):
        lines += ["## Steps (ms per call, batch = images at once)", "",
                  "| workload | batch | jaxviz ms | torch ms | torch 1 thread ms | torch.compile ms | jaxviz loop ms/step "
                  "| ratio jaxviz/torch | ratio jaxviz/torch 1 thread | XLA GFLOP | jaxviz GFLOP/s | matmul GFLOP/s, same rounds "
                  "| of ceiling | images/s | load before -> after |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in data["steps"]:
            g = r.get
            lines.append(
                f"| {r['workload']} | {r['batch']} | {r['jaxviz']['ms']} | {g('torch', {}).get('ms', '-')} | "
                f"{g('torch 1 thread', {}).get('ms', '-')} | "
                f"{g('torch.compile', {}).get('ms', '-')} | {g('jaxviz loop', {}).get('ms', '-')} | "
                f"**{g('ratio_jaxviz_over_torch', '-')}** | {g('ratio_jaxviz_over_torch_1_thread', '-')} | "
                f"{g('xla_gflop', '-')} | {r['jaxviz'].get('gflops', '-')} | {g('ceiling_gflops_in_rounds') or '-'} | "
                f"{r['jaxviz'].get('ceiling_fraction', '-')} | {r['jaxviz']['images_per_s']} | "
                f"{r['load_before'][0]} -> {r['load_after'][0]} |")
        lines.append("")
        lines += ["First calls (s): " + ", ".join(
            f"{r['workload']} b{r['batch']} jaxviz {r['jaxviz_first_call_s']}"
            + (f" / torch.compile {r['torch_compile_first_call_s']}" if "torch_compile_first_call_s" in r else "")
            for r in data["steps"]), ""]
    if "lucent" in data:
        lines += ["## Lucent vs recipes.lucid (channel objectives on CaffeNet conv5, ms per step)", ""]
        lu = data["lucent"]
        if "error" in lu:
            lines.append(f"Lucent: {lu['error']}")
        for b in ("b1", "b8"):
            if b in lu:
                lines.append(f"- {b}: " + "; ".join(f"{k} {v['ms_per_step']}" +
                                                    (f" (jaxviz/this {v['ratio_jaxviz_over_this']})"
                                                     if "ratio_jaxviz_over_this" in v else "")
                                                    for k, v in lu[b].items()))
        if lu.get("note"):
            lines.append(f"- note: {lu['note']}")
        lines.append("")
    if data.get("sweep"):
        lines += ["## Sweep throughput (DGN-AM through compiled_run)", "",
                  "| chunk | ms/step | unit-steps/s | units/s (200 steps) | first call s |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['chunk']} | {r['ms_per_step']} | {r['unit_steps_per_s']} | {r['units_per_s_200_steps']} | "
                  f"{r['first_call_s']} |" for r in data["sweep"]]
        lines.append("")
    if data.get("compile"):
        lines += ["## First call vs steady state (3 steps), fresh processes", "",
                  "| workload | batch | compilation cache | first call s | steady call s | compiling s "
                  "(first - steady) | processes |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r.get('workload', 'recipes.lucid')} | {r['batch']} | {r['cache']} | "
                  f"{r.get('first_call_s', r.get('error'))} | {r.get('steady_call_s', '-')} | "
                  f"{r.get('compiling_s', '-')} | {r.get('processes', 1)} |" for r in data["compile"]]
        lines.append("")
    if data.get("memory"):
        lines += ["## Peak memory of two calls (fresh process; peak RSS over the first two calls, minus RSS after setup and compilation)", "",
                  "| workload | batch | impl | peak - before MB | peak RSS MB |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['workload']} | {r['batch']} | {r['impl']} | {r.get('peak_minus_before_mb', r.get('error'))} | "
                  f"{r.get('peak_rss_mb', '-')} |" for r in data["memory"]]
        lines.append("")
    if data.get("chunk_memory"):
        lines += ["## Memory per run in a chunk (the sweep's step on CaffeNet fc8, XLA's buffer assignment)", "",
                  "| preset | " + " | ".join(f"chunk {n}: temp / args / out MB" for n in data["chunk_memory"][0]["by_chunk"])
                  + " | MB per further run | sweep's estimate MB | estimate / XLA "
                  "| runs in half the free memory, by the estimate / by XLA (before the cap) |",
                  "| --- " * (len(data["chunk_memory"][0]["by_chunk"]) + 5) + "|"]
        for r in data["chunk_memory"]:
            cells = [f"{d['temp_mb']} / {d['argument_mb']} / {d['output_mb']}" for d in r["by_chunk"].values()]
            lines.append(f"| {r['preset']} | " + " | ".join(cells) + f" | {r['xla_mb_per_run']} | "
                         f"{r['estimate_mb_per_run']} | {r['estimate_over_xla']} | {r['default_chunk']} / {r['chunk_by_xla']} |")
        lines.append("")
    if data.get("inverse_set"):
        i = data["inverse_set"]
        lines += ["## Inverse set", "", f"{i.get('config')}: first call {i.get('first_call_s')} s (with compilation), "
                  f"second {i.get('second_call_s')} s; load {i.get('load_before')} -> {i.get('load_after')}", ""]
    if data.get("units"):
        u = data["units"]
        lines += ["## Units: a sweep's compute (DGN-AM on fc8, one run a unit, results to the host)", "",
                  (f"{u['units']} units x {u['steps']} steps in {u['chunks']} chunks of {u['chunk']} on {u['device']}: "
                   f"first pass {u['first_pass_s']} s (with compilation), second {u['second_pass_s']} s "
                   f"({u['unit_steps_per_s']} unit-steps/s); load {u['load'][0]} -> {u['load'][1]}")
                  if "second_pass_s" in u else f"error: {u.get('error')}", ""]
    return "\n".join(lines)


def plot(data: dict, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = data.get("steps") or []
    names = [n for n in STEPS if any(r["workload"] == n for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(3.2 * max(1, len(names)), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        rs = [r for r in rows if r["workload"] == name]
        for k, style in (("jaxviz", "o-"), ("torch", "s--"), ("torch 1 thread", "x-."), ("torch.compile", "^:")):
            pts = [(r["batch"], r["batch"] / r[k]["ms"] * 1000) for r in rs if k in r]
            if pts:
                ax.plot(*zip(*pts), style, label=k)
        ax.set_xscale("log", base=2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("batch")
        ax.set_ylabel("images/s")
        ax.grid(alpha=0.3)
    if names:  # a report written before any step was timed (the ceiling alone) has no curves to name
        axes[0][0].legend(fontsize=7)
    m = data["machine"]
    fig.suptitle(f"jaxviz vs PyTorch, {m.get('cpu_model', m.get('processor'))}, {m['cpus']} cores, "
                 f"load {data['load_before'][0]}->{data.get('load_after', ['?'])[0]}", fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())


# ----- main --------------------------------------------------------------------------------------------

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=f"benchmarks/results/{jax.default_backend()}-{datetime.date.today()}",
                        help="path prefix: writes PREFIX.json, PREFIX.md, PREFIX.png")
    parser.add_argument("--only", default=",".join(DEFAULT),
                        help=f"comma-separated pieces of: {', '.join(ALL)} (default: all but units)")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--chunks", default="1,4,8,16")
    parser.add_argument("--units", type=int, default=1000, help="units piece: fc8 units, one run each")
    parser.add_argument("--unit-steps", type=int, default=200, help="units piece: DGN-AM steps a run")
    parser.add_argument("--units-chunk", type=int, default=None,
                        help="units piece: runs per chunk (default: the sweep's, from the device's free memory)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--repeats-large", type=int, default=3, help="rounds at batches of 32 and more")
    parser.add_argument("--compile-batches", default="1,8",
                        help="batches that also run torch.compile and jaxviz's loop (both slow to warm up)")
    parser.add_argument("--no-torch-compile", action="store_true")
    parser.add_argument("--compile-repeats", type=int, default=1,
                        help="fresh processes per first-call figure of the compile piece (medians reported)")
    parser.add_argument("--no-loop", action="store_true", help="leave out jaxviz's loop (compiled_run) variants")
    parser.add_argument("--cache-dir", default="", help="enable JAX's persistent compilation cache here")
    parser.add_argument("--child-compile", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-workload", default="recipes.lucid", help=argparse.SUPPRESS)
    parser.add_argument("--child-memory", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_compile:
        print("CHILD " + json.dumps(child_compile(args.child_compile, args.cache, args.child_workload)))
        return
    if args.child_memory:
        print("CHILD " + json.dumps(child_memory(args.child_memory)))
        return
    if args.cache_dir:
        from benchmarks.cache import enable_compilation_cache
        enable_compilation_cache(args.cache_dir)
    only = [p for p in args.only.split(",") if p]
    unknown = set(only) - set(ALL)
    if unknown:
        parser.error(f"unknown pieces {sorted(unknown)}; pieces: {', '.join(ALL)}")
    # earlier figures are kept: a second run the same day names its own files
    refuse_existing(parser, report_paths(pathlib.Path(args.out)), "--out (make bench: BENCH_OUT=...)")
    batches = [int(b) for b in args.batches.split(",")]
    data: dict[str, Any] = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                            "command": " ".join(["python -m benchmarks.suite", *(argv or sys.argv[1:])]),
                            "args": vars(args), "machine": machine(), "load_before": load()}
    t_start = time.perf_counter()

    def guarded(name, fn, *a):
        """Run one piece; an error is recorded in the results instead of losing the others, and the
        files are rewritten after every piece (a run stopped half-way keeps what it measured)."""
        try:
            result = fn(*a)
        except Exception as e:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            result = {"error": f"{type(e).__name__}: {e}"[:500]}
        data[name] = result
        data["load_after"] = load()
        write_report(pathlib.Path(args.out), data)
        return result
    nets = Nets() if set(only) & {"caffenet_fwd", "pixel", "generator_fwd", "generator_vjp", "dgn_am", "lucent",
                                  "sweep", "chunk_memory", "units"} else None
    if "ceiling" in only:
        data["ceiling"] = guarded("ceiling", ceiling, args.repeats)
        print(f"ceiling: {json.dumps(data['ceiling'])}", flush=True)
    names = [n for n in STEPS if n in only]
    if names:
        done: list[dict] = []
        matmul = matmul_call() if "ceiling" in only else None   # timed again beside every step
        for b in batches:   # written after every batch: a run killed at a large batch keeps the smaller ones
            rows = guarded("steps", steps, nets, names, [b], args.repeats, not args.no_torch_compile,
                           matmul, not args.no_loop, True, args.repeats_large,
                           [int(c) for c in args.compile_batches.split(",") if c])
            done += rows if isinstance(rows, list) else []
            data["steps"] = done
            write_report(pathlib.Path(args.out), data)
    if "lucent" in only:
        data["lucent"] = guarded("lucent", lucent_piece, nets, args.repeats)
    if "sweep" in only:
        data["sweep"] = guarded("sweep", sweep_piece, nets, [int(c) for c in args.chunks.split(",")], args.repeats)
    if "compile" in only:
        data["compile"] = guarded("compile", compile_piece, [b for b in batches if b <= 8] or [1],
                                  args.compile_repeats)
    if "memory" in only:
        data["memory"] = guarded("memory", memory_piece, ["pixel", "dgn_am"], [b for b in batches if b <= 8],
                                 _have_torch())
    if "chunk_memory" in only:
        data["chunk_memory"] = guarded("chunk_memory", chunk_memory_piece, nets)
    if "inverse_set" in only:
        data["inverse_set"] = guarded("inverse_set", inverse_set_piece)
    if "units" in only:
        data["units"] = guarded("units", units_piece, nets, args.units, args.unit_steps, args.units_chunk)
    data["load_after"] = load()
    data["wall_s"] = round(time.perf_counter() - t_start, 1)
    paths = write_report(pathlib.Path(args.out), data)
    print(f"wrote {', '.join(map(str, paths))} (folder {pathlib.Path(args.out).parent}) in {data['wall_s']} s")


if __name__ == "__main__":
    main()
