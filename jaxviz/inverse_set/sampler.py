"""Sampling the inverse set of a neuron (Hada & Carreira-Perpinan 2019): many inputs with z1 <= f <= z2.

Instead of one maximizing image, the goal is ``n`` diverse, realistic inputs ``G(c_i)`` whose activation lies
in ``[z1, z2]`` for every constrained neuron (several neurons = the intersection of their inverse sets,
eq. 11-12). Two phases, as in the paper (sec. 3.3-3.4):

1. **Seeds** (eq. 8). ``K`` codes start at ``E(X0)`` for random inputs ``X0`` and minimize the
   bound-constrained augmented Lagrangian ``-sum_ij ||e_i - e_j||^2 - sum lambda (c - s) + mu/2 sum (c - s)^2``
   (``e = E(G(c))``, ``c`` the constraint values, ``s >= 0`` slacks in closed form), ``inner_steps`` gradient
   steps per outer iteration, then ``lambda <- max(lambda - mu c, 0)``, ``mu <- growth * mu``; stop as soon as
   all ``K`` codes are feasible after an outer iteration.
2. **Fast sampling** (eq. 10). ``lambda*``, ``mu*`` are frozen. Each round takes **one** gradient step of the
   Lagrangian plus the distance to every accepted sample, and accepts the feasible codes, until ``n``.

Constraints. The paper writes the one-sided ``z2 - f <= eps0`` with ``eps0 = eps/2``, ``eps = z2 - z1``: the
Lagrangian aims at a band of width ``eps0`` (the upper half of the range; ``z2`` itself was never binding
there), so that the seeds sit inside the range rather than on its edge. Here every sample must satisfy
``z1 <= f <= z2`` on both sides, so the band of width ``eps0`` is centred in the range and each neuron has two
constraints ``c >= 0``: ``c_lo = f - (z1 + r)`` and ``c_hi = (z2 - r) - f`` with ``r = (eps - eps0)/2``
(``eps/4`` for the paper's ``eps0``). Acceptance always uses the true ``[z1, z2]``.

Distance to the accepted set. ``sum_i sum_y ||e_i - a_y||^2 = N sum_i ||e_i||^2 - 2 sum_i e_i . S + K Q`` with
``N`` the count, ``S = sum_y a_y`` and ``Q = sum_y ||a_y||^2`` of the accepted encodings: the exact eq. (10)
term from three running sums, ``O(K m)`` time per round whatever ``n`` is, and ``O(m)`` extra memory. The
accepted codes, encodings and activations go into buffers of fixed size ``n`` allocated once, ``O(n (d + m))``
(rows written by a masked scatter, so shapes are static and each round runs the same compiled programs).

The API takes any jax functions: ``problem_from_functions(G, E, f)`` builds an ``InverseSetProblem``;
``model_problem`` / ``sample_inverse_set`` do it for a (classifier ``Model``, generator ``Model``) pair.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxviz.core.objectives import Position, check_unit, unit_values
from jaxviz.models import preprocessing as pp
from jaxviz.models.generator import crop_to_classifier
from jaxviz.models.model import code_bounds as model_code_bounds

DIVERSITY = ("encoder", "code", "none")
OPTIMIZERS = ("adam", "sgd")


# ----- problem description ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Constraint:
    """``z1 <= activation <= z2`` for one neuron: an fc unit, or a conv channel at ``position``."""

    layer: str
    unit: int
    z1: float
    z2: float
    position: Position = "center"

    def __post_init__(self):
        if not (math.isfinite(self.z1) and math.isfinite(self.z2)):
            raise ValueError(f"{self.name}: z1 and z2 must be finite, got [{self.z1}, {self.z2}]")
        if self.z1 > self.z2:
            raise ValueError(f"{self.name}: empty range, z1 = {self.z1} > z2 = {self.z2}")

    @property
    def name(self) -> str:
        """``layer[unit]`` (with the position for conv channels)."""
        pos = "" if self.position == "center" else f"@{self.position}"
        return f"{self.layer}[{self.unit}]{pos}"


class Forward(NamedTuple):
    """One evaluation of K codes: inputs ``G(c)``, encodings ``E(G(c))`` (K, m), activations ``f`` (K, P)."""

    images: jax.Array
    encodings: jax.Array
    activations: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class InverseSetProblem:
    """What the sampler needs: ``forward(params, codes) -> Forward``, ranges, code bounds, initial codes.

    ``forward`` and ``init`` are pure functions of ``params`` (passed to the compiled loops as an argument,
    so network weights are inputs, not constants); keep the same ``forward`` object to reuse compilations.
    """

    forward: Callable[[Any, jax.Array], Forward]
    init: Callable[[Any, jax.Array, int], jax.Array]   # (params, key, K) -> starting codes E(X0)
    z1: np.ndarray                                     # (P,)
    z2: np.ndarray                                     # (P,)
    params: Any = None
    code_lower: np.ndarray | None = None               # (d,) or None: unbounded
    code_upper: np.ndarray | None = None
    names: tuple[str, ...] = ()


def problem_from_functions(generator: Callable[[jax.Array], jax.Array],
                           encoder: Callable[[jax.Array], jax.Array],
                           neurons: Callable[[jax.Array], jax.Array],
                           z1: Sequence[float] | float, z2: Sequence[float] | float,
                           init_inputs: Callable[[jax.Array, int], jax.Array],
                           code_lower: Any = None, code_upper: Any = None,
                           names: Sequence[str] = ()) -> InverseSetProblem:
    """A problem from plain batched functions G(codes), E(inputs), f(inputs) -> (K, P); X0 = init_inputs(key, K)."""
    z1a, z2a = _ranges(z1, z2)

    def forward(params: Any, codes: jax.Array) -> Forward:
        x = generator(codes)
        acts = jnp.reshape(neurons(x), (codes.shape[0], -1))
        return Forward(x, jnp.reshape(encoder(x), (codes.shape[0], -1)), acts)

    def init(params: Any, key: jax.Array, k: int) -> jax.Array:
        return jnp.reshape(encoder(init_inputs(key, k)), (k, -1))

    return InverseSetProblem(forward, init, z1a, z2a, None, _opt_array(code_lower), _opt_array(code_upper),
                             tuple(names) or tuple(f"neuron {p}" for p in range(len(z1a))))


def _ranges(z1: Any, z2: Any) -> tuple[np.ndarray, np.ndarray]:
    z1a, z2a = np.atleast_1d(np.asarray(z1, np.float32)), np.atleast_1d(np.asarray(z2, np.float32))
    if z1a.shape != z2a.shape or z1a.ndim != 1:
        raise ValueError(f"z1 and z2 must be matching vectors, got shapes {z1a.shape} and {z2a.shape}")
    if not (np.all(np.isfinite(z1a)) and np.all(np.isfinite(z2a))):
        raise ValueError("z1 and z2 must be finite")
    bad = np.flatnonzero(z1a > z2a)
    if bad.size:
        raise ValueError(f"empty range for neuron {int(bad[0])}: z1 = {z1a[bad[0]]} > z2 = {z2a[bad[0]]}")
    return z1a, z2a


def _opt_array(x: Any) -> np.ndarray | None:
    return None if x is None else np.asarray(x, np.float32)


# ----- the (classifier Model, generator Model) adapter -------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _ModelForward:
    """Hashable forward of a Caffe pair: crop(G(c)) -> one classifier pass for E's layer and every neuron."""

    classifier: Any          # flax module
    generator: Any           # flax module
    encoder_layer: str
    neurons: tuple[tuple[str, int, Any], ...]   # (layer, unit, position)

    def taps(self) -> tuple[str, ...]:
        """Classifier taps one pass needs, sorted."""
        return tuple(sorted({self.encoder_layer} | {layer for layer, _, _ in self.neurons}))

    def encode(self, clf_params: Any, x: jax.Array) -> tuple[jax.Array, dict]:
        """E(x) flattened, and the taps of the same pass."""
        acts = self.classifier.apply({"params": clf_params}, x, self.taps())
        return acts[self.encoder_layer].reshape(x.shape[0], -1), acts

    def __call__(self, params: Any, codes: jax.Array) -> Forward:
        clf_params, gen_params = params
        x = self.generator.apply({"params": gen_params}, codes, ("deconv0",))["deconv0"]
        x = crop_to_classifier(x, self.generator.config)
        enc, acts = self.encode(clf_params, x)
        f = jnp.stack([unit_values(acts, layer, pos)[:, unit] for layer, unit, pos in self.neurons], axis=-1)
        return Forward(x, enc, f)


@dataclasses.dataclass(frozen=True, eq=False)
class _ModelInit:
    """Starting codes E(X0): X0 uniform over the classifier's pixel range, in its input space."""

    forward: _ModelForward
    input_shape: tuple[int, ...]
    pixel_scale: float
    mean: np.ndarray   # per channel, or Caffe's mean image

    def __call__(self, params: Any, key: jax.Array, k: int) -> jax.Array:
        x = jax.random.uniform(key, (k, *self.input_shape), jnp.float32, 0.0, self.pixel_scale)
        x = x - self.mean
        return self.forward.encode(params[0], x)[0]


def _input_mean(preprocessing: dict, shape: tuple[int, ...]) -> np.ndarray:
    return pp.mean_array({"mean": 0.0, **preprocessing}, shape[0], shape[1])


def default_code_bounds(generator: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """[0, ub]: codes are fc6 after ReLU; ub by ``jaxviz.models.code_bounds`` (None when none is known)."""
    size = int(generator.config.code_size)
    try:
        upper = model_code_bounds(generator)
    except ValueError:
        upper = None
    return np.zeros(size, np.float32), upper


def model_problem(classifier: Any, generator: Any, constraints: Sequence[Constraint],
                  encoder_layer: str = "fc6", code_bounds: tuple[Any, Any] | None = None) -> InverseSetProblem:
    """The problem for a (classifier Model, generator Model) pair; E = classifier up to ``encoder_layer``."""
    constraints = list(constraints)
    if not constraints:
        raise ValueError("give at least one Constraint")
    check_constraints(classifier, constraints, encoder_layer)
    fwd = _ModelForward(classifier.module, generator.module, encoder_layer,
                        tuple((_live_layer(classifier, c), int(c.unit), c.position) for c in constraints))
    pre = dict(classifier.metadata.get("preprocessing") or {})
    shape = tuple(classifier.input_shape)
    init = _ModelInit(fwd, shape, float(pre.get("pixel_scale", 255.0)), _input_mean(pre, shape))
    lower, upper = default_code_bounds(generator) if code_bounds is None else code_bounds
    return InverseSetProblem(fwd, init, *_ranges([c.z1 for c in constraints], [c.z2 for c in constraints]),
                             (classifier.params, generator.params), _opt_array(lower), _opt_array(upper),
                             tuple(c.name for c in constraints))


def _live_layer(classifier: Any, c: Constraint) -> str:
    # For z1 > 0, ReLU(a) in [z1, z2] exactly when a in [z1, z2]: constrain the value before the in-place ReLU
    # (Caffe's "<layer>:pre" tap) when there is one. Same inverse set, but a code whose unit sits at 0
    # still gets a gradient (after the ReLU it would be stuck there: seen on conv5 intersections).
    if c.z1 <= 0 or c.layer.endswith(":pre"):
        return c.layer
    x = jax.ShapeDtypeStruct((1, *classifier.input_shape), jnp.float32)
    try:
        jax.eval_shape(lambda p, x: classifier.apply(p, x, (c.layer + ":pre",)), classifier.params, x)
    except ValueError:
        return c.layer
    return c.layer + ":pre"


def check_constraints(classifier: Any, constraints: Sequence[Constraint], encoder_layer: str = "fc6") -> None:
    """Clear errors before compiling: unknown layers (ValueError), units out of range (IndexError), positions."""
    taps = tuple(sorted({encoder_layer} | {c.layer for c in constraints}))
    x = jax.ShapeDtypeStruct((1, *classifier.input_shape), jnp.float32)
    shapes = jax.eval_shape(lambda p, x: classifier.apply(p, x, taps), classifier.params, x)
    for c in constraints:
        shape = shapes[c.layer].shape
        check_unit(c.layer, int(c.unit), shape[-1])
        if len(shape) == 4:
            jax.eval_shape(lambda a: unit_values({c.layer: a}, c.layer, c.position), shapes[c.layer])


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
    noise, since exactly equal codes get exactly equal gradients and would never separate.
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

    def __post_init__(self):
        if self.diversity not in DIVERSITY:
            raise ValueError(f"diversity must be one of {DIVERSITY}, got {self.diversity!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
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
    holds, per neuron, the seed activation closest to its range over the run).
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


# ----- the small pure functions ---------------------------------------------------------------------------

def constraint_values(acts: jax.Array, z1: jax.Array, z2: jax.Array, eps0: jax.Array) -> jax.Array:
    """(K, 2P) values, ``>= 0`` when met: ``f - (z1 + r)`` and ``(z2 - r) - f``, ``r = (z2 - z1 - eps0) / 2``."""
    r = 0.5 * (z2 - z1 - eps0)
    return jnp.concatenate([acts - (z1 + r), (z2 - r) - acts], axis=-1)


def slack(c: jax.Array, lam: jax.Array, mu: jax.Array) -> jax.Array:
    """The closed-form minimizer over ``s >= 0``: ``max(0, c - lambda / mu)``."""
    return jnp.maximum(0.0, c - lam / mu)


def constraint_penalty(c: jax.Array, lam: jax.Array, mu: jax.Array) -> jax.Array:
    """``sum -lambda (c - s) + mu/2 (c - s)^2`` at the optimal slack (its gradient in c is the same with s fixed)."""
    r = c - jax.lax.stop_gradient(slack(c, lam, mu))
    return jnp.sum(-lam * r + 0.5 * mu * jnp.square(r))


def update_multipliers(c: jax.Array, lam: jax.Array, mu: jax.Array,
                       growth: float) -> tuple[jax.Array, jax.Array]:
    """``lambda <- max(lambda - mu c, 0)``, then ``mu <- growth mu``."""
    return jnp.maximum(lam - mu * c, 0.0), mu * growth


def pairwise_sq_sum(e: jax.Array) -> jax.Array:
    """``sum_{i,j} ||e_i - e_j||^2`` over ordered pairs, as ``2K sum ||e_i||^2 - 2 ||sum e_i||^2`` (O(K m))."""
    return 2.0 * e.shape[0] * jnp.sum(jnp.square(e)) - 2.0 * jnp.sum(jnp.square(jnp.sum(e, axis=0)))


class AcceptedStats(NamedTuple):
    """Running sums of the accepted encodings: count N, sum S (m,), sum of squared norms Q."""

    count: jax.Array
    total: jax.Array
    total_sq: jax.Array


def accepted_sq_sum(e: jax.Array, stats: AcceptedStats) -> jax.Array:
    """``sum_i sum_y ||e_i - a_y||^2 = N sum ||e_i||^2 - 2 sum_i e_i . S + K Q``: O(K m), whatever N is."""
    return (stats.count * jnp.sum(jnp.square(e)) - 2.0 * jnp.sum(e @ stats.total)
            + e.shape[0] * stats.total_sq)


def augmented_lagrangian(e: jax.Array, c: jax.Array, lam: jax.Array, mu: jax.Array,
                         weight: float = 1.0) -> jax.Array:
    """Eq. (8): ``-weight * sum_ij ||e_i - e_j||^2`` plus the constraint terms (e empty: eq. 14)."""
    return -weight * pairwise_sq_sum(e) + constraint_penalty(c, lam, mu)


def sampling_objective(e: jax.Array, c: jax.Array, lam: jax.Array, mu: jax.Array, stats: AcceptedStats,
                       weight: float = 1.0) -> jax.Array:
    """Eq. (10): eq. (8) minus the distances of the K codes to every accepted sample."""
    return augmented_lagrangian(e, c, lam, mu, weight) - weight * accepted_sq_sum(e, stats)


def is_feasible(acts: jax.Array, z1: jax.Array, z2: jax.Array) -> jax.Array:
    """(K,) True where every constrained neuron is inside its range."""
    return jnp.all((acts >= z1) & (acts <= z2), axis=-1)


def violation(acts: jax.Array, z1: jax.Array, z2: jax.Array) -> jax.Array:
    """(K, P) distance of each activation to its range (0 inside)."""
    return jnp.maximum(z1 - acts, 0.0) + jnp.maximum(acts - z2, 0.0)


# ----- compiled steps ---------------------------------------------------------------------------------------
# The loops are driven from Python over jitted steps rather than written as lax.while_loop/scan: XLA:CPU runs
# these networks' convolutions several times slower inside a loop body (measured on the embedded pair, K = 10:
# 417 ms per gradient step in a scan, 67 ms as a jitted step). Three programs serve both phases, each compiled
# once per (forward, optimizer, diversity) and batch size: the gradient step (the seed phase is the sampling
# step with an empty accepted set, whose distance term is then exactly 0), the forward evaluation, and the
# buffer update. Step sizes, multipliers and weights are traced arguments, so changing them recompiles nothing.

class _Data(NamedTuple):
    z1: jax.Array
    z2: jax.Array
    eps0: jax.Array
    lower: jax.Array
    upper: jax.Array


class _Hyper(NamedTuple):
    lam: jax.Array
    mu: jax.Array
    lr: jax.Array
    weight: jax.Array


def _diversity_features(features: str, codes: jax.Array, out: Forward) -> jax.Array:
    return codes if features == "code" else out.encodings


def _programs_for(problem: InverseSetProblem, config: InverseSetConfig) -> "_Programs":
    # "none" (eq. 14) is the encoder program with weight 0: same compiled code, no diversity gradient.
    return _programs(problem.forward, config.optimizer, "code" if config.diversity == "code" else "encoder")


def _weight(config: InverseSetConfig) -> float:
    return 0.0 if config.diversity == "none" else config.diversity_weight


def _direction(optimizer: str) -> optax.GradientTransformation:
    # The step is codes - lr * direction; lr stays a traced argument.
    return optax.scale_by_adam() if optimizer == "adam" else optax.identity()


def empty_stats(m: int) -> AcceptedStats:
    """No accepted samples yet (the seed phase): the distance-to-accepted term is 0."""
    return AcceptedStats(jnp.asarray(0, jnp.int32), jnp.zeros((m,), jnp.float32), jnp.asarray(0.0, jnp.float32))


class _Programs(NamedTuple):
    evaluate: Callable
    step: Callable
    accept: Callable
    init_direction: Callable


@functools.lru_cache(maxsize=32)
def _programs(forward: Callable, optimizer: str, features: str) -> _Programs:
    """The jitted evaluation, eq. (8)/(10) gradient step, and acceptance for one problem forward."""
    direction = _direction(optimizer)

    def loss(codes, params, data: _Data, hyper: _Hyper, stats: AcceptedStats):
        out = forward(params, codes)
        e = _diversity_features(features, codes, out)
        c = constraint_values(out.activations, data.z1, data.z2, data.eps0)
        return sampling_objective(e, c, hyper.lam, hyper.mu, stats, hyper.weight)

    @jax.jit
    def evaluate(params, codes) -> tuple[Forward, jax.Array]:
        out = forward(params, codes)
        return out, _diversity_features(features, codes, out)

    @jax.jit
    def step(params, data: _Data, codes, opt_state, hyper: _Hyper, stats: AcceptedStats):
        g = jax.grad(loss)(codes, params, data, hyper, stats)
        d, opt_state = direction.update(g, opt_state, codes)
        return jnp.clip(codes - hyper.lr * d, data.lower, data.upper), opt_state

    @functools.partial(jax.jit, donate_argnums=(0,))
    def accept(buffers: "_Buffers", codes, out: Forward, features, ok, round_index) -> "_Buffers":
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

    return _Programs(evaluate, step, accept, jax.jit(direction.init))


class _Buffers(NamedTuple):
    """Accepted samples: running sums of their diversity features, and fixed-size (n, ...) rows."""

    stats: AcceptedStats
    codes: jax.Array
    encodings: jax.Array
    activations: jax.Array
    rounds: jax.Array


def _track_best(acts: np.ndarray, z1: np.ndarray, z2: np.ndarray, best: tuple[np.ndarray, np.ndarray]):
    # Per neuron, the activation closest to its range seen so far (what an unreachable range reports).
    v = np.asarray(violation(acts, z1, z2))
    i = np.argmin(v, axis=0)
    cols = np.arange(v.shape[1])
    closer = v[i, cols] < best[0]
    return np.where(closer, v[i, cols], best[0]), np.where(closer, acts[i, cols], best[1])


def _hyper(lam: jax.Array, mu: float, lr: float, weight: float) -> _Hyper:
    return _Hyper(jnp.asarray(lam, jnp.float32), jnp.asarray(mu, jnp.float32), jnp.asarray(lr, jnp.float32),
                  jnp.asarray(weight, jnp.float32))


def _seed_phase(problem: InverseSetProblem, config: InverseSetConfig, data: _Data, codes: jax.Array):
    """Eq. (8) outer loop; stops once every seed is feasible (checked after each outer iteration) or max_outer."""
    prog = _programs_for(problem, config)
    params = problem.params
    out, features = prog.evaluate(params, codes)
    stats = empty_stats(features.shape[1])
    acts = np.asarray(out.activations)
    best = _track_best(acts, problem.z1, problem.z2, (np.full(len(problem.z1), np.inf), acts[0]))
    lam = np.zeros((codes.shape[0], 2 * len(problem.z1)), np.float32)
    mu, outer = float(config.mu0), 0
    while not is_feasible(acts, problem.z1, problem.z2).all() and outer < config.max_outer:
        hyper, opt_state = _hyper(lam, mu, config.lr, _weight(config)), prog.init_direction(codes)
        for _ in range(config.inner_steps):
            codes, opt_state = prog.step(params, data, codes, opt_state, hyper, stats)
        acts = np.asarray(prog.evaluate(params, codes)[0].activations)
        lam, mu = update_multipliers(constraint_values(acts, problem.z1, problem.z2, np.asarray(data.eps0)),
                                     lam, mu, config.mu_growth)
        lam, mu = np.asarray(lam, np.float32), float(mu)
        best = _track_best(acts, problem.z1, problem.z2, best)
        outer += 1
    return codes, acts, lam, mu, outer, best[1]


def _sampling_phase(problem: InverseSetProblem, config: InverseSetConfig, seeds: jax.Array, data: _Data,
                    lam: np.ndarray, mu: float) -> tuple[_Buffers, int]:
    """Eq. (10) rounds (one step each, lambda* and mu* frozen) until n samples are accepted or max_rounds."""
    prog = _programs_for(problem, config)
    params, n = problem.params, config.n
    out, features = prog.evaluate(params, seeds)
    buffers = _Buffers(empty_stats(features.shape[1]), jnp.zeros((n, seeds.shape[1]), jnp.float32),
                       jnp.zeros((n, out.encodings.shape[1]), jnp.float32),
                       jnp.zeros((n, out.activations.shape[1]), jnp.float32), jnp.full((n,), -1, jnp.int32))
    buffers = prog.accept(buffers, seeds, out, features, jnp.ones(seeds.shape[0], bool), jnp.int32(0))
    lr = config.sample_lr if config.sample_lr is not None else config.lr
    hyper, opt_state = _hyper(lam, mu, lr, _weight(config)), prog.init_direction(seeds)
    codes, rounds = seeds, 0
    while int(buffers.stats.count) < n and rounds < config.max_rounds:
        codes, opt_state = prog.step(params, data, codes, opt_state, hyper, buffers.stats)
        out, features = prog.evaluate(params, codes)
        rounds += 1
        ok = is_feasible(out.activations, data.z1, data.z2)
        buffers = prog.accept(buffers, codes, out, features, ok, jnp.int32(rounds))
    return buffers, rounds


def _images(problem: InverseSetProblem, config: InverseSetConfig, codes: np.ndarray, batch: int) -> np.ndarray:
    # Rendered in batches of the round size (last one padded), so the evaluation compiled for the rounds serves.
    prog = _programs_for(problem, config)
    parts = []
    for i in range(0, len(codes), batch):
        chunk = codes[i:i + batch]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)]) if len(chunk) < batch else chunk
        parts.append(np.asarray(prog.evaluate(problem.params, jnp.asarray(padded))[0].images)[:len(chunk)])
    return np.concatenate(parts)


# ----- the entry points -------------------------------------------------------------------------------------

def _data(problem: InverseSetProblem, config: InverseSetConfig, d: int) -> _Data:
    z1, z2 = jnp.asarray(problem.z1), jnp.asarray(problem.z2)
    lower = jnp.full((d,), -jnp.inf) if problem.code_lower is None else jnp.broadcast_to(problem.code_lower, (d,))
    upper = jnp.full((d,), jnp.inf) if problem.code_upper is None else jnp.broadcast_to(problem.code_upper, (d,))
    return _Data(z1, z2, config.eps0_fraction * (z2 - z1), lower, upper)


def initial_codes(problem: InverseSetProblem, key: jax.Array, config: InverseSetConfig) -> jax.Array:
    """E(X0) for random X0 (one shared X0 plus jitter with ``shared_start``), clipped to the code bounds."""
    k = config.seeds
    if config.shared_start:
        k_init, k_jit = jax.random.split(key)
        one = jax.jit(problem.init, static_argnums=2)(problem.params, k_init, 1)
        scale = config.shared_start_jitter * (jnp.sqrt(jnp.mean(jnp.square(one))) + 1e-12)
        codes = one + scale * jax.random.normal(k_jit, (k, one.shape[1]))
    else:
        codes = jax.jit(problem.init, static_argnums=2)(problem.params, key, k)
    lo = -np.inf if problem.code_lower is None else problem.code_lower
    hi = np.inf if problem.code_upper is None else problem.code_upper
    return jnp.clip(codes, lo, hi).astype(jnp.float32)


def sample(problem: InverseSetProblem, key: jax.Array, config: InverseSetConfig = InverseSetConfig(),
           codes0: jax.Array | None = None) -> InverseSetResult:
    """Seeds by eq. (8), then fast sampling by eq. (10) (or the joint eq. 15): an ``InverseSetResult``."""
    codes0 = initial_codes(problem, key, config) if codes0 is None else jnp.asarray(codes0, jnp.float32)
    if codes0.ndim != 2 or codes0.shape[0] != config.seeds:
        raise ValueError(f"codes0 must have shape ({config.seeds}, d), got {codes0.shape}")
    data = _data(problem, config, codes0.shape[1])
    seeds, seed_acts, lam, mu, outer, best = _seed_phase(problem, config, data, codes0)
    feasible = is_feasible(seed_acts, problem.z1, problem.z2)
    common = dict(names=problem.names, z1=problem.z1, z2=problem.z2, outer_iterations=outer,
                  seed_gradient_steps=outer * config.inner_steps, lam=lam, mu=mu, best_activations=best)
    if not feasible.all():
        d = codes0.shape[1]
        ranges = ", ".join(f"{nm} in [{a:g}, {b:g}]: best {v:g}"
                           for nm, a, b, v in zip(problem.names, problem.z1, problem.z2, best))
        return InverseSetResult(np.zeros((0, d), np.float32), np.zeros((0,)), np.zeros((0, len(problem.z1))),
                                np.zeros((0, 0)), np.zeros((0,), np.int32), status="unreachable",
                                message=(f"the range was not reached: {int(feasible.sum())}/{len(feasible)} seeds "
                                         f"feasible after {outer} outer iterations (max_outer); {ranges}"),
                                sampling_rounds=0, diversity={}, **common)
    if config.joint:
        out = _programs_for(problem, config).evaluate(problem.params, seeds)[0]
        codes, enc, acts = seeds, out.encodings, out.activations
        rounds_of, used = np.zeros(len(codes), np.int32), 0
    else:
        buffers, used = _sampling_phase(problem, config, seeds, data, lam, mu)
        count = int(buffers.stats.count)
        codes, enc, acts = buffers.codes[:count], buffers.encodings[:count], buffers.activations[:count]
        rounds_of = np.asarray(buffers.rounds[:count])
    codes = np.asarray(codes)
    images = _images(problem, config, codes, config.seeds)
    status = "ok" if len(codes) >= config.n else "incomplete"
    message = (f"{len(codes)} samples in {used} sampling rounds after {outer} outer iterations"
               if status == "ok" else
               f"only {len(codes)} of {config.n} samples after max_rounds = {config.max_rounds} sampling rounds")
    return InverseSetResult(codes, images, np.asarray(acts), np.asarray(enc), rounds_of, status=status,
                            message=message, sampling_rounds=used,
                            diversity=diversity_figures(np.asarray(enc), images), **common)


def sample_inverse_set(classifier: Any, generator: Any, constraints: Constraint | Sequence[Constraint],
                       key: jax.Array | None = None, config: InverseSetConfig = InverseSetConfig(), *,
                       encoder_layer: str = "fc6", code_bounds: tuple[Any, Any] | None = None,
                       codes0: jax.Array | None = None) -> InverseSetResult:
    """Sample the inverse set (or an intersection) of neurons of a classifier Model through a generator Model."""
    if isinstance(constraints, Constraint):
        constraints = [constraints]
    problem = model_problem(classifier, generator, constraints, encoder_layer, code_bounds)
    return sample(problem, jax.random.key(0) if key is None else key, config, codes0)


# ----- diversity figures ---------------------------------------------------------------------------------------

def mean_pairwise_distance(x: np.ndarray, chunk: int = 256) -> float:
    """Mean Euclidean distance over pairs i < j of the rows of ``x`` (flattened), in chunks of one matmul."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    n = len(x)
    if n < 2:
        return 0.0
    sq = np.sum(x * x, axis=1)
    total = 0.0
    for i in range(0, n, chunk):
        d2 = sq[i:i + chunk, None] + sq[None, :] - 2.0 * x[i:i + chunk] @ x.T
        total += np.sqrt(np.maximum(d2, 0.0)).sum()
    return float(total / (n * (n - 1)))


def diversity_figures(encodings: np.ndarray, images: np.ndarray) -> dict:
    """Mean pairwise distance of the samples in E space and in pixel (input) space."""
    return {"mean_pairwise_distance_E": mean_pairwise_distance(encodings),
            "mean_pairwise_distance_pixels": mean_pairwise_distance(images)}


__all__ = [
    "Constraint", "Forward", "InverseSetProblem", "InverseSetConfig", "InverseSetResult", "AcceptedStats",
    "problem_from_functions", "model_problem", "check_constraints", "default_code_bounds", "initial_codes",
    "sample", "sample_inverse_set", "constraint_values", "slack", "constraint_penalty", "update_multipliers",
    "pairwise_sq_sum", "accepted_sq_sum", "augmented_lagrangian", "sampling_objective", "is_feasible",
    "violation", "mean_pairwise_distance", "diversity_figures",
]
