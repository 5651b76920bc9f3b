"""Sampling the inverse set of a neuron (Hada & Carreira-Perpinan 2019): many inputs with z1 <= f <= z2.

Instead of one maximizing image, the goal is ``n`` diverse, realistic inputs ``G(c_i)`` whose activation lies
in ``[z1, z2]`` for every constrained neuron (several neurons = the intersection of their inverse sets,
eq. 11-12). Two phases, as in the paper (sec. 3.3-3.4):

1. **Seeds** (eq. 8). ``K`` codes start at ``E(X0)`` for random inputs ``X0`` and minimize the
   bound-constrained augmented Lagrangian ``-sum_ij ||e_i - e_j||^2 - sum lambda (c - s) + mu/2 sum (c - s)^2``
   (``e = E(G(c))``, ``c`` the constraint values, ``s >= 0`` slacks in closed form; ``lagrangian.py``),
   ``inner_steps`` gradient steps per outer iteration, then ``lambda <- max(lambda - mu c, 0)``,
   ``mu <- growth * mu``; stop as soon as all ``K`` codes are feasible after an outer iteration.
2. **Fast sampling** (eq. 10). ``lambda*``, ``mu*`` are frozen. Each round takes **one** gradient step of the
   Lagrangian plus the distance to every accepted sample, and accepts the feasible codes, until ``n``.

Both phases run on the shared loop (``jaxviz.core.loop``), like every other method:

- the parameterization is the problem's ``GeneratorCode`` (render G), the network its tap function, the
  objective ``lagrangian.lagrangian_objective`` (minus eq. 10), and the ``Method``: the update rule an optax
  chain, ``codes - lr * adam_direction(grad Lagrangian)`` (``optimizer="sgd"``: the gradient itself;
  ``update_rule``), code clipping the operator ``clip_code(lower, upper)``, the K codes one run's batch
  (``images_per_run``). The objective's gradient and the update rule are arranged so that a step's
  arithmetic is bit for bit that of a direct descent on the Lagrangian (see ``update_rule``);
- the run's target is a ``LagrangianTarget`` (multipliers, diversity weight, accepted-set sums, ranges,
  units), an argument: new multipliers or a grown accepted set reuse the compiled step;
- an outer iteration of the seed phase is one run of ``inner_steps`` steps from the current codes
  (``compiled_run`` with a start), so each starts with a fresh optimizer state; the loop choice is
  ``resolve_loop``'s (one ``lax.scan`` on GPU/TPU, a host-driven compiled step on CPU);
- the sampling phase drives the same compiled step (``compiled_parts``) one round at a time, carrying the
  loop state (codes and optimizer state) across rounds; between two rounds the host accepts the feasible
  codes. On CPU the seed runs and the rounds share one compiled step when they take the same step size
  (the seed phase's target is the rounds' with an empty accepted set, whose distance term is then 0);
- a step whose objective or codes are not finite ends the run, as everywhere on the loop: the codes keep
  their last finite values, and the result's status is "failed".

The accepted codes, encodings and activations go into buffers of fixed size ``n`` allocated once,
``O(n (d + m))``, rows written by a masked scatter, so shapes are static and each round runs the same
compiled programs; the distance to the accepted set comes from three running sums (``AcceptedStats``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxviz.core.fingerprint import value_key
from jaxviz.core.loop import Method, compiled_parts, compiled_run
from jaxviz.core.objectives import Objective
from jaxviz.core.operators import clip_code
from jaxviz.inverse_set.lagrangian import (AcceptedStats, LagrangianTarget, constraint_values, diversity_features,
                                           empty_stats, is_feasible, lagrangian_objective, update_multipliers,
                                           violation)
from jaxviz.inverse_set.metrics import diversity_figures
from jaxviz.inverse_set.problem import Constraint, Forward, InverseSetProblem, forward, model_problem

DIVERSITY = ("encoder", "code", "none")
OPTIMIZERS = ("adam", "sgd")
LOOPS = ("auto", "scan", "host")


# ----- configuration and result -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class InverseSetConfig:
    """Settings; the defaults are the paper's (K = 10, n = 500, mu0 = 10, growth 10, 100 inner steps).

    The paper takes plain gradient steps of length beta (sec. 3.4) without giving beta; the default here is
    Adam, whose per-coordinate step does not depend on the scale of the Lagrangian, which grows tenfold with
    mu at every outer iteration (one step size would not suit them all). ``optimizer="sgd"`` is the paper's.
    ``lr`` is in code units (the embedded fc6 codes are in [0, ~22]); ``sample_lr`` is beta of the sampling
    phase (None: ``lr``). ``diversity``: "encoder" (eq. 5/10, on E(G(c))), "code" (eq. 13, raw codes),
    "none" (eq. 14). ``joint``: optimize all ``n`` codes together (eq. 15; small ``n``), no sampling phase.
    ``shared_start``: every code starts from one E(X0) (sec. 4.2), plus ``shared_start_jitter`` (relative)
    noise, since exactly equal codes get exactly equal gradients and would never separate. ``loop``: how
    the seed phase's runs are driven (``jaxviz.core.loop.resolve_loop``; "auto" picks by backend).
    """

    k: int = 10
    n: int = 500
    mu0: float = 10.0
    mu_growth: float = 10.0
    inner_steps: int = 100
    max_outer: int = 8
    max_rounds: int = 1000
    optimizer: str = "adam"
    lr: float = 0.1
    sample_lr: float | None = None
    eps0_fraction: float = 0.5
    diversity: str = "encoder"
    diversity_weight: float = 1.0
    joint: bool = False
    shared_start: bool = False
    shared_start_jitter: float = 1e-3
    loop: str = "auto"

    def __post_init__(self):
        if self.diversity not in DIVERSITY:
            raise ValueError(f"diversity must be one of {DIVERSITY}, got {self.diversity!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.loop not in LOOPS:
            raise ValueError(f"loop must be one of {LOOPS}, got {self.loop!r}")
        if self.k < 1 or self.n < 1 or (not self.joint and self.n < self.k):
            raise ValueError(f"need 1 <= k <= n, got k={self.k}, n={self.n}")
        if not 0.0 <= self.eps0_fraction <= 1.0:
            raise ValueError(f"eps0_fraction must be in [0, 1], got {self.eps0_fraction}")
        if self.mu0 <= 0 or self.mu_growth < 1:
            raise ValueError(f"need mu0 > 0 and mu_growth >= 1, got {self.mu0}, {self.mu_growth}")
        if self.inner_steps < 1 or self.max_outer < 1 or self.max_rounds < 0:
            raise ValueError("inner_steps and max_outer must be >= 1, max_rounds >= 0")

    @property
    def seeds(self) -> int:
        """How many codes the seed phase optimizes together: K, or n for the joint eq. (15)."""
        return self.n if self.joint else self.k


@dataclasses.dataclass(frozen=True)
class InverseSetResult:
    """The accepted samples in acceptance order (seeds first), with how they were found.

    ``status``: "ok" (n samples), "incomplete" (max_rounds reached first: fewer samples), "unreachable"
    (the seeds never all became feasible within max_outer outer iterations: no samples; ``best_activations``
    holds, per neuron, the seed activation closest to its range over the run), "failed" (a step met a
    NaN/Inf and the run was stopped, as the shared loop stops one: the samples accepted before it, none when
    it happened in the seed phase; ``message`` says where).
    """

    codes: np.ndarray               # (N, d)
    images: np.ndarray              # (N, ...) G(codes)
    activations: np.ndarray         # (N, P) one column per constraint
    encodings: np.ndarray           # (N, m) E(G(codes))
    rounds: np.ndarray              # (N,) the sampling round that accepted each one; 0 = the seeds
    names: tuple[str, ...]
    z1: np.ndarray
    z2: np.ndarray
    status: str
    message: str
    sampling_rounds: int            # rounds of the fast sampling phase
    outer_iterations: int           # outer iterations of the seed phase
    seed_gradient_steps: int
    lam: np.ndarray                 # lambda* (K, 2P): [lower, upper] constraints per neuron
    mu: float                       # mu*
    best_activations: np.ndarray    # (P,)
    diversity: dict

    @property
    def order(self) -> np.ndarray:
        """Acceptance order: row i was the i-th sample accepted."""
        return np.arange(len(self.codes))

    def summary(self) -> dict:
        """JSON-ready figures (no arrays of samples)."""
        return {"status": self.status, "message": self.message, "samples": int(len(self.codes)),
                "neurons": list(self.names), "z1": self.z1.tolist(), "z2": self.z2.tolist(),
                "sampling_rounds": self.sampling_rounds, "outer_iterations": self.outer_iterations,
                "seed_gradient_steps": self.seed_gradient_steps, "mu_star": self.mu,
                "lambda_star_mean": float(np.mean(self.lam)) if self.lam.size else 0.0,
                "best_activations": self.best_activations.tolist(),
                "activation_min": self.activations.min(0).tolist() if len(self.codes) else [],
                "activation_max": self.activations.max(0).tolist() if len(self.codes) else [],
                "diversity": self.diversity}


# ----- the problem on the shared loop ----------------------------------------------------------------------

def _ascent() -> optax.GradientTransformation:
    """The objective's gradient back from what the loop feeds optax (its negation); XLA folds the two."""
    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(jnp.negative, updates), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def update_rule(optimizer: str, lr: float) -> optax.GradientTransformation:
    """``codes + lr * direction(grad objective)`` = ``codes - lr * direction(grad Lagrangian)``.

    ``direction``: Adam's (``"adam"``), or the gradient itself (``"sgd"``); both are odd in the gradient, so
    ascent on minus the Lagrangian is descent on it. The step is taken on the objective's gradient as the
    loop computed it (``_ascent`` undoes the loop's sign flip) rather than on its negation: the two agree
    in value, but XLA:CPU pairs the multiply-adds of the moment updates into FMAs differently around a
    negation, so only this arrangement keeps a direct descent's arithmetic bit for bit.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    direction = optax.scale_by_adam() if optimizer == "adam" else optax.identity()
    return optax.chain(_ascent(), direction, optax.scale_by_learning_rate(lr, flip_sign=False))


def _features(config: InverseSetConfig) -> str:
    # "none" (eq. 14) is the encoder objective with weight 0: same compiled step, no diversity gradient.
    return "code" if config.diversity == "code" else "encoder"


def _weight(config: InverseSetConfig) -> float:
    return 0.0 if config.diversity == "none" else config.diversity_weight


def _objective(problem: InverseSetProblem, config: InverseSetConfig) -> Objective:
    return lagrangian_objective(problem.readout, _features(config))


def _method(problem: InverseSetProblem, config: InverseSetConfig, lr: float) -> Method:
    # steps: one outer iteration of the seed phase. The sampling rounds use the same method (so, on CPU,
    # the same compiled step); their state's per-step trace only has room for those steps, and the
    # rounds past them are not recorded there (JAX drops scatters out of bounds), which nothing reads.
    return Method(config.inner_steps, update_rule(config.optimizer, lr),
                  clip_code(problem.code_lower, problem.code_upper), images_per_run=config.seeds,
                  name="inverse_set", loop=config.loop)


class _Ranges(NamedTuple):
    z1: jax.Array
    z2: jax.Array
    eps0: jax.Array
    units: jax.Array


def _ranges(problem: InverseSetProblem, config: InverseSetConfig) -> _Ranges:
    z1, z2 = jnp.asarray(problem.z1), jnp.asarray(problem.z2)
    return _Ranges(z1, z2, config.eps0_fraction * (z2 - z1), jnp.asarray(problem.units, jnp.int32))


def _target(ranges: _Ranges, config: InverseSetConfig, lam: Any, mu: float,
            accepted: AcceptedStats) -> LagrangianTarget:
    return LagrangianTarget(jnp.asarray(lam, jnp.float32), jnp.asarray(mu, jnp.float32),
                            jnp.asarray(_weight(config), jnp.float32), accepted, ranges.z1, ranges.z2,
                            ranges.eps0, ranges.units)


class _ByValue:
    """A static argument of a jitted function, hashed and compared by value (``jaxviz.core.fingerprint``).

    The loop's programs are cached that way; the evaluation and start programs below follow suit, so an
    equal problem built again reuses them.
    """

    __slots__ = ("value", "_key")

    def __init__(self, value: Any):
        self.value, self._key = value, value_key(value)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByValue) and other._key == self._key


@functools.partial(jax.jit, static_argnums=0)
def _evaluate(spec: _ByValue, net_params: Any, aux_params: Any, codes: jax.Array,
              units: jax.Array) -> tuple[Forward, jax.Array]:
    network, param, readout, features = spec.value
    out = forward(network, param, readout, net_params, aux_params, codes, units)
    return out, diversity_features(features, codes, out.encodings)


def _evaluator(problem: InverseSetProblem, config: InverseSetConfig,
               ranges: _Ranges) -> Callable[[jax.Array], tuple[Forward, jax.Array]]:
    """``codes -> (Forward, diversity features)``: the compiled evaluation the rounds accept by."""
    spec = _ByValue((problem.network, problem.param, problem.readout, _features(config)))
    return lambda codes: _evaluate(spec, problem.net_params, problem.aux_params, codes, ranges.units)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _start(init: _ByValue, net_params: Any, key: jax.Array, k: int) -> jax.Array:
    return init.value(net_params, key, k)


# ----- the accepted set -------------------------------------------------------------------------------------

class _Buffers(NamedTuple):
    """Accepted samples: running sums of their diversity features, and fixed-size (n, ...) rows."""

    stats: AcceptedStats
    codes: jax.Array
    encodings: jax.Array
    activations: jax.Array
    rounds: jax.Array


@functools.partial(jax.jit, donate_argnums=(0,))
def _accept(buffers: _Buffers, codes: jax.Array, out: Forward, features: jax.Array, ok: jax.Array,
            round_index: jax.Array) -> _Buffers:
    # Rows go to positions count, count+1, ... in order; the rest get index n, out of range: dropped.
    n = buffers.codes.shape[0]
    stats = buffers.stats
    pos = stats.count + jnp.cumsum(ok) - 1
    take = ok & (pos < n)
    idx = jnp.where(take, pos, n)
    w = take.astype(jnp.float32)
    stats = AcceptedStats(stats.count + jnp.sum(take), stats.total + w @ features,
                          stats.total_sq + jnp.sum(w * jnp.sum(jnp.square(features), -1)))
    return _Buffers(stats, buffers.codes.at[idx].set(codes, mode="drop"),
                    buffers.encodings.at[idx].set(out.encodings, mode="drop"),
                    buffers.activations.at[idx].set(out.activations, mode="drop"),
                    buffers.rounds.at[idx].set(round_index, mode="drop"))


def _track_best(acts: np.ndarray, z1: np.ndarray, z2: np.ndarray, best: tuple[np.ndarray, np.ndarray]):
    # Per neuron, the activation closest to its range seen so far (what an unreachable range reports).
    v = np.asarray(violation(acts, z1, z2))
    i = np.argmin(v, axis=0)
    cols = np.arange(v.shape[1])
    closer = v[i, cols] < best[0]
    return np.where(closer, v[i, cols], best[0]), np.where(closer, acts[i, cols], best[1])


# ----- the two phases ---------------------------------------------------------------------------------------

class _Seeds(NamedTuple):
    codes: jax.Array
    activations: np.ndarray
    lam: np.ndarray
    mu: float
    outer: int
    steps: int                 # gradient steps made
    best: np.ndarray
    failure: str               # where a NaN/Inf stopped the run ("" if none)


Progress = Callable[[str, int, int], None]  # (stage, done, total): told as a phase moves


def _silent(stage: str, done: int, total: int) -> None:
    del stage, done, total


def _seed_phase(problem: InverseSetProblem, config: InverseSetConfig, ranges: _Ranges, evaluate: Callable,
                codes: jax.Array, key: jax.Array, progress: Progress = _silent) -> _Seeds:
    """Eq. (8) outer loop; stops once every seed is feasible (checked after each outer iteration) or max_outer.

    Each outer iteration is one run of the shared loop, ``inner_steps`` steps from the current codes.
    """
    run = compiled_run(problem.network, _objective(problem, config), problem.param,
                       _method(problem, config, config.lr), batched=False, with_z0=True)
    out, features = evaluate(codes)
    stats = empty_stats(features.shape[1])
    acts = np.asarray(out.activations)
    best = _track_best(acts, problem.z1, problem.z2, (np.full(len(problem.z1), np.inf), acts[0]))
    lam = np.zeros((codes.shape[0], 2 * len(problem.z1)), np.float32)
    mu, outer, steps, failure = float(config.mu0), 0, 0, ""
    while not is_feasible(acts, problem.z1, problem.z2).all() and outer < config.max_outer:
        result = run(problem.net_params, problem.aux_params, _target(ranges, config, lam, mu, stats),
                     jax.random.fold_in(key, outer), codes)
        codes, outer = result.z, outer + 1
        failed = int(result.failed_step)
        if failed >= 0:
            steps += failed
            failure = f"step {failed} of outer iteration {outer}"
            break
        steps += config.inner_steps
        progress("seeds (eq. 8): outer iterations", outer, config.max_outer)
        acts = np.asarray(evaluate(codes)[0].activations)
        lam, mu = update_multipliers(constraint_values(acts, problem.z1, problem.z2, np.asarray(ranges.eps0)),
                                     lam, mu, config.mu_growth)
        lam, mu = np.asarray(lam, np.float32), float(mu)
        best = _track_best(acts, problem.z1, problem.z2, best)
    return _Seeds(codes, acts, lam, mu, outer, steps, best[1], failure)


def _sampling_phase(problem: InverseSetProblem, config: InverseSetConfig, ranges: _Ranges, evaluate: Callable,
                    seeds: jax.Array, lam: np.ndarray, mu: float, key: jax.Array,
                    progress: Progress = _silent) -> tuple[_Buffers, int, str]:
    """Eq. (10) rounds (one step each, lambda* and mu* frozen) until n samples are accepted or max_rounds.

    The rounds drive the loop's compiled step themselves, carrying its state (codes, optimizer state).
    """
    lr = config.sample_lr if config.sample_lr is not None else config.lr
    parts = compiled_parts(problem.network, _objective(problem, config), problem.param,
                           _method(problem, config, lr), batched=False, with_z0=True)
    n = config.n
    out, features = evaluate(seeds)
    buffers = _Buffers(empty_stats(features.shape[1]), jnp.zeros((n, seeds.shape[1]), jnp.float32),
                       jnp.zeros((n, out.encodings.shape[1]), jnp.float32),
                       jnp.zeros((n, out.activations.shape[1]), jnp.float32), jnp.full((n,), -1, jnp.int32))
    buffers = _accept(buffers, seeds, out, features, jnp.ones(seeds.shape[0], bool), jnp.int32(0))
    target = _target(ranges, config, lam, mu, buffers.stats)
    carry = parts.init(problem.net_params, problem.aux_params, target, key, seeds)
    rounds, failure = 0, ""
    while int(buffers.stats.count) < n and rounds < config.max_rounds:
        target = target._replace(accepted=buffers.stats)
        carry = parts.step(problem.net_params, problem.aux_params, target, carry, jnp.int32(rounds))
        out, features = evaluate(carry.z)
        rounds += 1
        # A stopped run keeps its last codes: accept nothing from it (they were judged last round).
        ok = is_feasible(out.activations, ranges.z1, ranges.z2) & carry.alive
        buffers = _accept(buffers, carry.z, out, features, ok, jnp.int32(rounds))
        progress("sampling (eq. 10): samples accepted", min(int(buffers.stats.count), n), n)
        if not bool(carry.alive):
            failure = f"sampling round {rounds}"
            break
    return buffers, rounds, failure


def _images(evaluate: Callable, codes: np.ndarray, batch: int) -> np.ndarray:
    # Rendered in batches of the round size (last one padded), so the evaluation compiled for the rounds serves.
    parts = []
    for i in range(0, len(codes), batch):
        chunk = codes[i:i + batch]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)]) if len(chunk) < batch else chunk
        parts.append(np.asarray(evaluate(jnp.asarray(padded))[0].images)[:len(chunk)])
    return np.concatenate(parts)


# ----- the entry points -------------------------------------------------------------------------------------

def initial_codes(problem: InverseSetProblem, key: jax.Array, config: InverseSetConfig) -> jax.Array:
    """E(X0) for random X0 (one shared X0 plus jitter with ``shared_start``), clipped to the code bounds."""
    k = config.seeds
    init = _ByValue(problem.init)
    if config.shared_start:
        k_init, k_jit = jax.random.split(key)
        one = _start(init, problem.net_params, k_init, 1)
        scale = config.shared_start_jitter * (jnp.sqrt(jnp.mean(jnp.square(one))) + 1e-12)
        codes = one + scale * jax.random.normal(k_jit, (k, one.shape[1]))
    else:
        codes = _start(init, problem.net_params, key, k)
    lo = -np.inf if problem.code_lower is None else problem.code_lower
    hi = np.inf if problem.code_upper is None else problem.code_upper
    return jnp.clip(codes, lo, hi).astype(jnp.float32)


def sample(problem: InverseSetProblem, key: jax.Array, config: InverseSetConfig = InverseSetConfig(),
           codes0: jax.Array | None = None, progress: Progress | None = None) -> InverseSetResult:
    """Seeds by eq. (8), then fast sampling by eq. (10) (or the joint eq. 15): an ``InverseSetResult``.

    ``progress(stage, done, total)`` is told after every outer iteration and every sampling round.
    """
    progress = _silent if progress is None else progress
    codes0 = initial_codes(problem, key, config) if codes0 is None else jnp.asarray(codes0, jnp.float32)
    if codes0.ndim != 2 or codes0.shape[0] != config.seeds:
        raise ValueError(f"codes0 must have shape ({config.seeds}, d), got {codes0.shape}")
    ranges = _ranges(problem, config)
    evaluate = _evaluator(problem, config, ranges)
    seed_key, sample_key = jax.random.split(jax.random.fold_in(key, 1))
    seeds = _seed_phase(problem, config, ranges, evaluate, codes0, seed_key, progress)
    feasible = is_feasible(seeds.activations, problem.z1, problem.z2)
    common = dict(names=problem.names, z1=problem.z1, z2=problem.z2, outer_iterations=seeds.outer,
                  seed_gradient_steps=seeds.steps, lam=seeds.lam, mu=seeds.mu, best_activations=seeds.best)
    if seeds.failure or not feasible.all():
        d = codes0.shape[1]
        if seeds.failure:
            status, message = "failed", (f"a NaN/Inf at {seeds.failure} of the seed phase stopped the run (the "
                                         f"codes keep their last finite values); no samples")
        else:
            ranges_text = ", ".join(f"{nm} in [{a:g}, {b:g}]: best {v:g}"
                                    for nm, a, b, v in zip(problem.names, problem.z1, problem.z2, seeds.best))
            status, message = "unreachable", (f"the range was not reached: {int(feasible.sum())}/{len(feasible)} "
                                              f"seeds feasible after {seeds.outer} outer iterations (max_outer); "
                                              f"{ranges_text}")
        return InverseSetResult(np.zeros((0, d), np.float32), np.zeros((0,)), np.zeros((0, len(problem.z1))),
                                np.zeros((0, 0)), np.zeros((0,), np.int32), status=status, message=message,
                                sampling_rounds=0, diversity={}, **common)
    failure = ""
    if config.joint:
        out = evaluate(seeds.codes)[0]
        codes, enc, acts = seeds.codes, out.encodings, out.activations
        rounds_of, used = np.zeros(len(codes), np.int32), 0
    else:
        buffers, used, failure = _sampling_phase(problem, config, ranges, evaluate, seeds.codes, seeds.lam,
                                                 seeds.mu, sample_key, progress)
        count = int(buffers.stats.count)
        codes, enc, acts = buffers.codes[:count], buffers.encodings[:count], buffers.activations[:count]
        rounds_of = np.asarray(buffers.rounds[:count])
    codes = np.asarray(codes)
    images = _images(evaluate, codes, config.seeds)
    if failure:
        status = "failed"
        message = (f"only {len(codes)} of {config.n} samples: a NaN/Inf at {failure} stopped the run "
                   f"after {seeds.outer} outer iterations")
    elif len(codes) >= config.n:
        status, message = "ok", f"{len(codes)} samples in {used} sampling rounds after {seeds.outer} outer iterations"
    else:
        status = "incomplete"
        message = f"only {len(codes)} of {config.n} samples after max_rounds = {config.max_rounds} sampling rounds"
    return InverseSetResult(codes, images, np.asarray(acts), np.asarray(enc), rounds_of, status=status,
                            message=message, sampling_rounds=used,
                            diversity=diversity_figures(np.asarray(enc), images), **common)


def sample_inverse_set(classifier: Any, generator: Any, constraints: Constraint | Sequence[Constraint],
                       key: jax.Array | None = None, config: InverseSetConfig = InverseSetConfig(), *,
                       encoder_layer: str | None = None, code_bounds: tuple[Any, Any] | None = None,
                       codes0: jax.Array | None = None, progress: Progress | None = None) -> InverseSetResult:
    """Sample the inverse set (or an intersection) of neurons of a classifier Model through a generator Model."""
    if isinstance(constraints, Constraint):
        constraints = [constraints]
    problem = model_problem(classifier, generator, constraints, encoder_layer, code_bounds)
    return sample(problem, jax.random.key(0) if key is None else key, config, codes0, progress)


__all__ = ["DIVERSITY", "OPTIMIZERS", "LOOPS", "Progress", "InverseSetConfig", "InverseSetResult", "update_rule",
           "initial_codes", "sample", "sample_inverse_set"]
