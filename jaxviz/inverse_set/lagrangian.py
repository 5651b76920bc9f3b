"""The bound-constrained augmented Lagrangian of inverse-set sampling (eq. 8 and 10), and its pure pieces.

Constraints. The paper writes the one-sided ``z2 - f <= eps0`` with ``eps0 = eps/2``, ``eps = z2 - z1``: the
Lagrangian aims at a band of width ``eps0`` (the upper half of the range; ``z2`` itself was never binding
there), so that the seeds sit inside the range rather than on its edge. Here every sample must satisfy
``z1 <= f <= z2`` on both sides, so the band of width ``eps0`` is centred in the range and each neuron has two
constraints ``c >= 0``: ``c_lo = f - (z1 + r)`` and ``c_hi = (z2 - r) - f`` with ``r = (eps - eps0)/2``
(``eps/4`` for the paper's ``eps0``). Acceptance always uses the true ``[z1, z2]``. Slacks ``s >= 0`` are
taken in closed form, and the multipliers follow ``lambda <- max(lambda - mu c, 0)``, ``mu <- growth * mu``.

Distance to the accepted set. ``sum_i sum_y ||e_i - a_y||^2 = N sum_i ||e_i||^2 - 2 sum_i e_i . S + K Q`` with
``N`` the count, ``S = sum_y a_y`` and ``Q = sum_y ||a_y||^2`` of the accepted encodings: the exact eq. (10)
term from three running sums (``AcceptedStats``), ``O(K m)`` time per round whatever ``n`` is.

On the shared loop, ``lagrangian_objective`` is the ``Objective`` to maximize, minus eq. (10): it reads the
encodings and constrained neurons from the pass's taps (or the ``"code"`` pseudo-tap, eq. 13) and everything
that changes between outer iterations and rounds (multipliers, diversity weight, accepted-set sums, ranges,
units) from the run's target, a ``LagrangianTarget``; so changing them recompiles nothing. With an empty
accepted set (the seed phase's target) it is exactly minus eq. (8), so both phases share one compiled step.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.core.objectives import CODE, Acts, Objective
from jaxviz.inverse_set.problem import Readout

FEATURES = ("encoder", "code")   # what the diversity terms measure: E(G(c)) (eq. 5/10) or c (eq. 13)


# ----- the pure pieces ---------------------------------------------------------------------------------------

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


def empty_stats(m: int) -> AcceptedStats:
    """No accepted samples yet (the seed phase): the distance-to-accepted term is 0."""
    return AcceptedStats(jnp.asarray(0, jnp.int32), jnp.zeros((m,), jnp.float32), jnp.asarray(0.0, jnp.float32))


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


# ----- the objective on the shared loop ----------------------------------------------------------------------

class LagrangianTarget(NamedTuple):
    """The run's target of ``lagrangian_objective``: traced, so new values reuse the compiled step."""

    lam: jax.Array            # (K, 2P) multipliers: [lower, upper] constraint per neuron
    mu: jax.Array             # () penalty parameter
    weight: jax.Array         # () diversity weight (0: eq. 14)
    accepted: AcceptedStats   # running sums of the accepted samples' features (empty: eq. 8)
    z1: jax.Array             # (P,) ranges
    z2: jax.Array
    eps0: jax.Array           # (P,) width of the target band
    units: jax.Array          # (P,) int32: each constrained neuron's unit in its readout tap


def lagrangian_objective(readout: Readout, features: str = "encoder") -> Objective:
    """Minus eq. (10) (minus eq. 8 with an empty accepted set), to maximize; reads a ``LagrangianTarget``.

    One function rather than a sum of ``Objective`` terms: the features and neurons are read once per pass
    and the terms combine as in ``sampling_objective``. Its gradient is the Lagrangian's own backward pass
    negated where it enters the network (``_minus``); the network's backward pass is linear in what it is
    fed, so the code gradient is exactly minus the one a direct descent on the Lagrangian computes.
    """
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    taps = frozenset(readout.taps) | ({CODE} if features == "code" else frozenset())

    def lagrangian(acts: Acts, t: LagrangianTarget) -> jax.Array:
        e = acts[CODE] if features == "code" else readout.encodings(acts)
        c = constraint_values(readout.activations(acts, t.units), t.z1, t.z2, t.eps0)
        return sampling_objective(e, c, t.lam, t.mu, t.accepted, t.weight)

    def fn(acts: Acts, t: LagrangianTarget) -> jax.Array:
        return _minus(lagrangian, {k: acts[k] for k in sorted(taps)}, t)

    return Objective(fn, taps, f"inverse_set_lagrangian({features})")


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _minus(f: Callable, acts: dict, t: Any) -> jax.Array:
    """``-f(acts, t)``, differentiated as minus ``f``'s own backward pass (seeded with +1) in ``acts``.

    The derivative of a plain ``-f``, arranged so that ``f``'s backward pass is the one a descent on ``f``
    runs: seeded with -1 instead, XLA:CPU folds the sign into other constants and pairs the multiply-adds
    into FMAs differently, which changes the last bits of the gradient. ``t`` gets no gradient.
    """
    return -f(acts, t)


def _minus_fwd(f: Callable, acts: dict, t: Any):
    value, vjp = jax.vjp(lambda a: f(a, t), acts)
    return -value, (vjp, t)


def _minus_bwd(f: Callable, residuals, ct: jax.Array):
    vjp, t = residuals
    (ct_acts,) = vjp(ct)
    return jax.tree_util.tree_map(jnp.negative, ct_acts), jax.tree_util.tree_map(_no_gradient, t)


def _no_gradient(x: jax.Array) -> jax.Array:
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, jax.dtypes.float0)


_minus.defvjp(_minus_fwd, _minus_bwd)


def diversity_features(features: str, codes: jax.Array, encodings: jax.Array) -> jax.Array:
    """What the diversity terms measure for ``features``: the codes (eq. 13) or the encodings."""
    return codes if features == "code" else encodings


__all__ = ["FEATURES", "constraint_values", "slack", "constraint_penalty", "update_multipliers",
           "pairwise_sq_sum", "AcceptedStats", "empty_stats", "accepted_sq_sum", "augmented_lagrangian",
           "sampling_objective", "is_feasible", "violation", "LagrangianTarget", "lagrangian_objective",
           "diversity_features"]
