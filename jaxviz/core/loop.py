"""The optimization loop: compiled once and ``vmap``-ped over seeds and units.

A run maximizes an ``Objective`` over the variable of a parameterization, from a PRNG key and a target
(unit index or reference features). Each step: render the image, apply the robustness transform, run
the network up to the deepest tap the objective reads, take the gradient, let the optax update rule turn
it into a step, then apply the prior operators. A step whose objective or variable is not finite ends
that run (the variable keeps its last finite value and the step is recorded); the other runs of a batch
go on. Everything stays on the device: no host round trip inside the loop. On GPU/TPU a run is one
``lax.scan``; on CPU the host dispatches a compiled step instead (see ``resolve_loop``), with identical
arithmetic.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxviz.core.fingerprint import value_key
from jaxviz.core.objectives import CODE, IMAGE, Objective, rank_in_layer, unit_values
from jaxviz.core.operators import Operator, OperatorContext
from jaxviz.core.plain_forms import plain_forms
from jaxviz.core.params import Parameterization
from jaxviz.core.transforms import Transform, apply_drawn, draw
from jaxviz.core import relu_rules

NetApply = Callable[[Any, jax.Array, Sequence[str]], dict]


@dataclasses.dataclass(frozen=True)
class Method:
    """How to optimize: step count, optax update rule, prior operators, robustness transform."""

    steps: int                              # updates made (a run evaluates the objective steps + 1 times)
    optimizer: optax.GradientTransformation  # the update rule, fed the gradient of -objective
    operator: Operator | None = None        # applied to the variable after every update (blur, clip, decay)
    transform: Transform | None = None      # random robustness transform of the image the network sees
    stop_on_zero_grad: bool = False         # end a run whose gradient is exactly zero (DGN-AM, Yosinski)
    images_per_run: int = 1                 # >1 for batch objectives such as diversity
    name: str = "custom"                    # shown in results and galleries
    loop: str = "auto"                      # "scan" (one device program), "host" (compiled step): resolve_loop
    redirected_relu_steps: int = 0          # the first N updates pass ReLU gradients by Lucid's redirected rule


class Result(NamedTuple):
    """What a run returns (under ``vmap``, every field gains a leading run axis)."""

    image: jax.Array              # (n, H, W, C) rendered from the final variable
    z: jax.Array                  # final variable (code, pixels or spectrum)
    objective: jax.Array          # (steps,) objective at each step's forward pass
    activation: jax.Array         # (steps, n) target unit's activation per step (0 if no unit)
    final_objective: jax.Array    # objective at the final variable
    final_activation: jax.Array   # (n,) target unit's activation at the final variable
    rank: jax.Array               # (n,) units of the target's layer above it at the end (-1: no unit)
    best_image: jax.Array         # image with the highest objective seen
    best_z: jax.Array             # the variable of the best image
    best_objective: jax.Array     # the highest objective seen (at best_step)
    best_step: jax.Array          # step of the best image (steps: the final variable)
    failed_step: jax.Array        # first step with a NaN/Inf objective or variable, -1 if none
    stopped_step: jax.Array       # step whose gradient was exactly zero (run stopped), -1 if none
    report: Any = None            # how far to trust it (jaxviz.scoring fills it; None from the bare engine)


# ----- one run -----------------------------------------------------------------------------------------

class _Carry(NamedTuple):
    z: jax.Array
    opt_state: Any
    alive: jax.Array
    best_z: jax.Array             # the variable of the best image
    best_objective: jax.Array     # the highest objective seen (at best_step)
    best_step: jax.Array
    failed_step: jax.Array
    stopped_step: jax.Array
    trace: jax.Array         # (steps,) objective per step, filled as the run goes
    activations: jax.Array   # (steps, n) target activation per step
    transform_draws: Any     # the transform's values for each step (leading axis steps), or None
    loop_key: jax.Array


def _target_activation(objective: Objective, acts: dict, target: Any) -> tuple[jax.Array, jax.Array]:
    """(activation, rank) of the objective's unit per image, or zeros and -1 when it has no single unit."""
    n = acts[IMAGE].shape[0]
    if objective.unit_layer is None:
        return jnp.zeros((n,), jnp.float32), jnp.full((n,), -1, jnp.int32)
    index = target if objective.unit_index is None else objective.unit_index
    values = unit_values(acts, objective.unit_layer, objective.unit_position)
    act = jnp.take(values, jnp.asarray(index, jnp.int32), axis=-1)
    rank = rank_in_layer(acts, objective.unit_layer, index, objective.unit_position)
    return act, rank.astype(jnp.int32)


def _redirected_early(value_and_grad: Callable, steps: int, total: int) -> Callable:
    """``value_and_grad`` whose ReLUs pass the gradient by the redirected rule for updates ``i < steps``.

    Lucid's redirected ReLU gradient lets a run start where the target's ReLU (or a layer before it) is off
    for the image and nothing gets through; after the first steps the true gradient takes over. The rule is
    chosen when tracing, so both gradients are traced and ``lax.cond`` picks one per step (the step index
    is not mapped over runs, so it stays a branch, not a select of both); ``steps >= total`` redirects the
    whole run and traces one gradient.
    """
    def redirected(*args):
        with relu_rules.relu_backward("redirected"):
            return value_and_grad(*args)

    def early(net_params, aux_params, z, target, drawn, step):
        args = (net_params, aux_params, z, target, drawn)
        return jax.lax.cond(step < steps, redirected, value_and_grad, *args)

    return early if steps < total else (lambda *args, step: redirected(*args))


def _plain(value_and_grad: Callable) -> Callable:
    """``value_and_grad`` that takes (and ignores) the step index."""
    return lambda *args, step: value_and_grad(*args)


def step_keys(loop_key: jax.Array, i: jax.Array) -> jax.Array:
    """The two keys of step ``i``: the transform's, then the operator's."""
    return jax.random.split(jax.random.fold_in(loop_key, i))


def transform_draws(method: Method, loop_key: jax.Array, n: int) -> Any:
    """The values the transform uses at every step of a run of ``n`` images (leading axis: steps), drawn
    from each step's key at the start of the run: XLA:CPU compiles every hash as kernels of its own, and the
    initial state compiles for speed of compiling where the step compiles for speed of running
    (``transforms.RandomTransform``). None without a transform."""
    if method.transform is None:
        return None
    at = lambda i: draw(method.transform, step_keys(loop_key, i)[0], n)
    return jax.vmap(at)(jnp.arange(method.steps, dtype=jnp.int32))


def step_draws(draws: Any, i: jax.Array) -> Any:
    """Step ``i``'s values out of ``transform_draws``; past the last step, the last step's (a driver that
    runs longer than ``Method.steps``, such as inverse-set sampling, meets only transform-free methods)."""
    return jax.tree_util.tree_map(lambda a: lax.dynamic_index_in_dim(a, i, keepdims=False), draws)


class RunParts(NamedTuple):
    """A run split in three pure functions, so a driver can loop on the device or from the host."""

    init: Callable[..., _Carry]    # (net_params, aux_params, target, key, z0) -> carry
    step: Callable[..., _Carry]    # (net_params, aux_params, target, carry, i) -> carry
    finish: Callable[..., Result]  # (net_params, aux_params, target, carry) -> Result


def run_parts(net_apply: NetApply, objective: Objective, param: Parameterization, method: Method) -> RunParts:
    """The pure pieces of one run: its initial state, one optimization step, and its result."""
    taps = objective.network_taps
    if objective.unit_layer is not None and objective.unit_layer not in taps:
        taps = tuple(sorted(set(taps) | {objective.unit_layer}))
    if not taps:
        raise ValueError(f"objective {objective.name} reads no network layer")

    def judge(net_params, image, z, target, drawn=None):
        """Objective and activations of a rendered image, seen through the transform with ``drawn`` values
        (None: untransformed)."""
        seen = image if drawn is None or method.transform is None else apply_drawn(method.transform, drawn, image)
        acts = dict(net_apply(net_params, seen, taps))
        acts[IMAGE] = image
        if param.is_code:
            acts[CODE] = z
        return objective(acts, target), acts

    def forward(net_params, aux_params, z, target, drawn=None):
        """Objective and activations of ``z`` rendered."""
        return judge(net_params, param.render(aux_params, z), z, target, drawn)

    value_and_grad = jax.value_and_grad(forward, argnums=2, has_aux=True)
    if method.redirected_relu_steps < 0:
        raise ValueError(f"redirected_relu_steps must be >= 0, got {method.redirected_relu_steps}")
    if method.redirected_relu_steps:
        value_and_grad = _redirected_early(value_and_grad, method.redirected_relu_steps, method.steps)
    else:
        value_and_grad = _plain(value_and_grad)

    def init(net_params, aux_params, target, key, z0=None) -> _Carry:
        init_key, loop_key = jax.random.split(key)
        z = param.init(init_key, method.images_per_run) if z0 is None else jnp.asarray(z0, jnp.float32)
        minus_one = jnp.array(-1, jnp.int32)
        return _Carry(z, method.optimizer.init(z), jnp.array(True), z, jnp.array(-jnp.inf, jnp.float32),
                      minus_one, minus_one, minus_one, jnp.full((method.steps,), jnp.nan, jnp.float32),
                      jnp.zeros((method.steps, z.shape[0]), jnp.float32),
                      transform_draws(method, loop_key, z.shape[0]), loop_key)

    def step(net_params, aux_params, target, carry: _Carry, i: jax.Array) -> _Carry:
        drawn = step_draws(carry.transform_draws, i)
        (value, acts), grad = value_and_grad(net_params, aux_params, carry.z, target, drawn, step=i)
        activation, _ = _target_activation(objective, acts, target)
        # optax minimizes: feed it the gradient of -objective.
        updates, opt_state = method.optimizer.update(jax.tree_util.tree_map(jnp.negative, grad),
                                                     carry.opt_state, carry.z)
        z = optax.apply_updates(carry.z, updates)
        if method.operator is not None:
            # An operator that ignores its key costs no hash: XLA drops the unused draw.
            z = method.operator(z, OperatorContext(i, step_keys(carry.loop_key, i)[1], grad))
        finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(z))
        zero_grad = jnp.all(grad == 0) if method.stop_on_zero_grad else jnp.array(False)
        improved = carry.alive & jnp.isfinite(value) & (value > carry.best_objective)
        moving = carry.alive & finite & ~zero_grad
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(moving, a, b), new, old)
        return _Carry(
            z=keep(z, carry.z), opt_state=keep(opt_state, carry.opt_state), alive=moving,
            best_z=jnp.where(improved, carry.z, carry.best_z),
            best_objective=jnp.where(improved, value, carry.best_objective),
            best_step=jnp.where(improved, i, carry.best_step),
            failed_step=jnp.where(carry.alive & ~finite, i, carry.failed_step),
            stopped_step=jnp.where(carry.alive & finite & zero_grad, i, carry.stopped_step),
            trace=carry.trace.at[i].set(jnp.where(carry.alive, value, jnp.nan)),
            activations=carry.activations.at[i].set(activation), transform_draws=carry.transform_draws,
            loop_key=carry.loop_key)

    def finish(net_params, aux_params, target, carry: _Carry) -> Result:
        # This program runs once per run: its layers take their plainest forms, which compile in about
        # half the time, and both images go through one render in a loop of two, so the renderer (a
        # generator, say) is compiled once.
        with plain_forms():
            image, best_so_far = lax.map(lambda z: param.render(aux_params, z),
                                         jnp.stack([carry.z, carry.best_z]))
            # The final image is judged as produced, without the robustness transform.
            final_value, acts = judge(net_params, image, carry.z, target)
        final_activation, rank = _target_activation(objective, acts, target)
        final_better = jnp.isfinite(final_value) & (final_value > carry.best_objective)
        return Result(
            image=image, z=carry.z, objective=carry.trace, activation=carry.activations,
            final_objective=final_value, final_activation=final_activation, rank=rank,
            best_image=jnp.where(final_better, image, best_so_far),
            best_z=jnp.where(final_better, carry.z, carry.best_z),
            best_objective=jnp.where(final_better, final_value, carry.best_objective),
            best_step=jnp.where(final_better, method.steps, carry.best_step),
            failed_step=carry.failed_step, stopped_step=carry.stopped_step)

    return RunParts(init, step, finish)


def make_run(net_apply: NetApply, objective: Objective, param: Parameterization,
             method: Method) -> Callable[..., Result]:
    """The pure function ``run(net_params, aux_params, target, key, z0=None) -> Result``: one ``lax.scan``."""
    return _scan_run(run_parts(net_apply, objective, param, method), method.steps)


def _scan_run(parts: RunParts, steps: int) -> Callable[..., Result]:
    def run(net_params, aux_params, target, key, z0=None) -> Result:
        carry = parts.init(net_params, aux_params, target, key, z0)
        body = lambda c, i: (parts.step(net_params, aux_params, target, c, i), None)
        carry, _ = jax.lax.scan(body, carry, jnp.arange(steps, dtype=jnp.int32))
        return parts.finish(net_params, aux_params, target, carry)

    return run


def resolve_loop(loop: str) -> str:
    """``"scan"`` or ``"host"`` for a ``Method.loop`` setting; ``"auto"`` picks by the default backend.

    XLA:CPU runs convolutions inside a while-loop body slower than the same convolutions in a top-level
    program (CaffeNet's pixel step: 1.3x on an idle 2-core machine, several times under load; see
    benchmarks/loop_driver.py), so on CPU the host drives a compiled step; on GPU/TPU the whole run is one
    ``lax.scan``. The host driver only dispatches: the state stays on the device and nothing is read back
    inside the loop.
    """
    if loop == "auto":
        return "host" if jax.default_backend() == "cpu" else "scan"
    if loop not in ("scan", "host"):
        raise ValueError(f"loop must be 'auto', 'scan' or 'host', not {loop!r}")
    return loop


class CompiledRun:
    """A compiled run: call it like ``run(net_params, aux_params, targets, keys[, z0]) -> Result``.

    ``on_step(n)``, when given, is told each time ``n`` more steps are done: every few steps with the host
    driver (which then waits for the device, so the count is real), once at the end with a scan.
    """

    def __init__(self, call: Callable[..., Result], programs: Sequence[Any]):
        self._call, self._programs = call, tuple(programs)

    def __call__(self, *args: Any, on_step: Callable[[int], None] | None = None) -> Result:
        return self._call(*args, on_step=on_step)

    def compilations(self) -> int:
        """How many times its busiest program was compiled (1 when every call reused one compilation)."""
        return max(p._cache_size() for p in self._programs)


_COMPILED: "collections.OrderedDict[Any, CompiledRun]" = collections.OrderedDict()
COMPILED_CACHE_SIZE = 64
PROGRESS_UPDATES = 20  # how often a host-driven run reports progress, per run


def compiled_run(net_apply: NetApply, objective: Objective, param: Parameterization, method: Method,
                 batched: bool, with_z0: bool) -> CompiledRun:
    """The compiled run (vmapped over targets, keys and starts when ``batched``), cached by value.

    Returns ``run(net_params, aux_params, targets, keys[, z0]) -> Result``. Two setups that are equal by
    value (``jaxviz.core.fingerprint.value_key``), such as the same objective built twice, get the same
    compiled run; the cache keeps the 64 most recently used.
    """
    key = value_key((net_apply, objective, param, method, batched, with_z0))
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    run = _compile_run(net_apply, objective, param, method, batched, with_z0)
    _COMPILED[key] = run
    if len(_COMPILED) > COMPILED_CACHE_SIZE:
        _COMPILED.popitem(last=False)
    return run


def _compile_run(net_apply: NetApply, objective: Objective, param: Parameterization, method: Method,
                 batched: bool, with_z0: bool) -> CompiledRun:
    parts = run_parts(net_apply, objective, param, method)
    vmap = (lambda f, axes: jax.vmap(f, in_axes=axes)) if batched else (lambda f, axes: f)
    run_axes = (None, None, 0, 0) + ((0,) if with_z0 else ())  # z0, when given, is mapped like the keys

    if resolve_loop(method.loop) == "scan":
        program = jax.jit(vmap(_scan_run(parts, method.steps), run_axes), compiler_options=step_options())

        def scan(*args: Any, on_step: Callable[[int], None] | None = None) -> Result:
            result = program(*args)
            if on_step is not None:
                jax.block_until_ready(result)
                on_step(method.steps)
            return result
        return CompiledRun(scan, [program])

    init, step, finish = compiled_parts(net_apply, objective, param, method, batched, with_z0)

    every = max(1, method.steps // PROGRESS_UPDATES)

    def run(net_params, aux_params, targets, keys, *z0, on_step: Callable[[int], None] | None = None) -> Result:
        carry = init(net_params, aux_params, targets, keys, *z0)
        for i in range(method.steps):
            carry = step(net_params, aux_params, targets, carry, jnp.int32(i))
            if on_step is not None and ((i + 1) % every == 0 or i + 1 == method.steps):
                carry.z.block_until_ready()
                on_step(every if (i + 1) % every == 0 else (i + 1) % every)
        return finish(net_params, aux_params, targets, carry)

    return CompiledRun(run, [init, step, finish])


_PARTS: "collections.OrderedDict[Any, RunParts]" = collections.OrderedDict()


def run_once_options() -> dict[str, Any]:
    """XLA options for a run's initial state and its result, programs called once per run: on CPU, the
    step's options, LLVM's level 1 and XLA's older loop emitter.

    XLA:CPU's fusion emitters (its newer code generator for elementwise loops) and LLVM's full
    optimization make a step's elementwise kernels faster but compile each more slowly, and these two
    programs run once. The initial state is mostly random draws (a Fourier image's spectrum, every step's
    transform values), whose hashing is the slow part of compiling it: ``recipes.lucid``'s at batch 8, on
    a 2-core AMD EPYC, compiles in 3.2 s with XLA's defaults, 1.0 s at level 1, 1.7 s with the older
    emitter, 0.6 s with both, to the same values. The step keeps both (without them the pixel step runs
    2-10 % slower). Off CPU: XLA's defaults.
    """
    if jax.default_backend() != "cpu":
        return {}
    return {**step_options(),
            **known_options({"xla_backend_optimization_level": 1, "xla_cpu_use_fusion_emitters": False})}


def step_options() -> dict[str, Any]:
    """XLA options for a run's step, the program called every iteration: on CPU, Eigen's convolutions.

    XLA's CPU backend hands convolutions to YNNPACK, which runs the input gradient of CaffeNet's grouped
    conv2 on one core; Eigen's convolutions use them all. Keeping YNNPACK for the dots only makes a
    CaffeNet step on a 2-core CPU 5 to 18 % faster (pixel batch 1: 62 -> 51 ms, batch 8: 279 -> 250 ms,
    batch 32: 1158 -> 996 ms; DGN-AM batch 8: 587 -> 526 ms), equal to float rounding. Off CPU: XLA's defaults.
    """
    if jax.default_backend() != "cpu":
        return {}
    return known_options({"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"})


def known_options(options: dict[str, Any]) -> dict[str, Any]:
    """The ``options`` this XLA knows: an option it does not (an older or newer jaxlib) is left out, not
    an error at every compilation."""
    return {name: value for name, value in options.items() if _known_option(name, value)}


@functools.cache
def _known_option(name: str, value: Any) -> bool:
    try:
        jax.jit(lambda x: x + 1).lower(jnp.float32(0)).compile({name: value})
        return True
    except Exception:   # XLA says "No such compile option" as a runtime error of its own
        return False


def compiled_parts(net_apply: NetApply, objective: Objective, param: Parameterization, method: Method,
                   batched: bool = False, with_z0: bool = True) -> RunParts:
    """The jitted ``init``, ``step`` and ``finish`` of a run (vmapped when ``batched``), cached by value.

    For a driver with host work between steps (inverse-set sampling rounds accept samples between two
    steps): it calls ``step`` itself, carrying the state. ``compiled_run``'s host driver uses these same
    programs, so such a driver and a fixed-length host run of an equal setup share one compilation.
    """
    key = value_key((net_apply, objective, param, method, batched, with_z0))
    if key in _PARTS:
        _PARTS.move_to_end(key)
        return _PARTS[key]
    parts = run_parts(net_apply, objective, param, method)
    vmap = (lambda f, axes: jax.vmap(f, in_axes=axes)) if batched else (lambda f, axes: f)
    run_axes = (None, None, 0, 0) + ((0,) if with_z0 else ())
    once = run_once_options()
    compiled = RunParts(jax.jit(vmap(parts.init, run_axes), compiler_options=once),
                        jax.jit(vmap(parts.step, (None, None, 0, 0, None)), compiler_options=step_options()),
                        jax.jit(vmap(parts.finish, (None, None, 0, 0)), compiler_options=once))
    _PARTS[key] = compiled
    if len(_PARTS) > COMPILED_CACHE_SIZE:
        _PARTS.popitem(last=False)
    return compiled
