"""Update rules: optax transforms that turn the objective's gradient into a step of the variable.

The loop feeds optax the gradient of ``-objective`` (optax minimizes), so each rule below is written for
that sign. The seed papers' rules in these terms: DGN-AM and PPGN ``normalized_gradient_ascent`` with a
``linear_schedule``; Yosinski et al.'s "progress" policy ``progress_gradient_ascent``; Mahendran &
Vedaldi's ``momentum_with_resets``; the PPGN sampler's noise ``add_gaussian_noise`` before normalizing.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax


def scale_by_mean_abs(eps: float = 1e-12) -> optax.GradientTransformation:
    """Divide the update by its mean absolute value, per run (DGN-AM's and PPGN's normalization)."""
    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda u: u / (jnp.mean(jnp.abs(u)) + eps), updates), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def gradient_ascent(learning_rate: float | optax.Schedule) -> optax.GradientTransformation:
    """Plain gradient ascent ``z += lr * g`` (the loop feeds optax the gradient of ``-objective``)."""
    return optax.sgd(learning_rate)


def normalized_gradient_ascent(learning_rate: float | optax.Schedule) -> optax.GradientTransformation:
    """``z += lr_i * g / mean|g|`` (DGN-AM, PPGN)."""
    return optax.chain(scale_by_mean_abs(), optax.scale_by_learning_rate(learning_rate))


def linear_schedule(start: float, end: float, n: int) -> optax.Schedule:
    """``lr_i = start + (end - start) * i / n`` (DGN-AM's and PPGN's step size; ``i`` from 0)."""
    return lambda i: start + (end - start) * jnp.asarray(i, jnp.float32) / n


def progress_gradient_ascent(desired_progress: float, max_lr: float) -> optax.GradientTransformation:
    """``x += lr g`` with ``lr = min(max_lr, desired / ||g||^2)`` per image (Yosinski's "progress" policy).

    Under a linear model of the objective the step raises it by ``desired_progress``; the cap keeps flat
    regions from exploding the step.
    """
    def update(updates, state, params=None):
        del params
        axes = tuple(range(1, updates.ndim))
        sq = jnp.sum(jnp.square(updates), axis=axes, keepdims=True)
        lr = jnp.minimum(max_lr, desired_progress / sq)
        return -lr * updates, state  # updates are -g: the step is +lr g
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class _MomentumState(NamedTuple):
    count: jax.Array
    trace: jax.Array


def momentum_with_resets(learning_rates: Sequence[float], momentum: float = 0.9) -> optax.GradientTransformation:
    """Heavy-ball descent with a per-step lr table; the momentum restarts whenever the lr changes.

    ``m = momentum m - lr g; x += m`` (Mahendran & Vedaldi's ``invert_nn.m``), ``m`` zeroed at each lr
    switch so the old velocity does not overshoot; steps past the table keep its last lr.
    """
    rates = jnp.asarray(learning_rates, jnp.float32)

    def init(params: jax.Array) -> _MomentumState:
        return _MomentumState(jnp.zeros((), jnp.int32), jnp.zeros_like(params))

    def update(updates, state: _MomentumState, params=None):
        del params
        last = rates.shape[0] - 1
        lr = rates[jnp.minimum(state.count, last)]
        prev = rates[jnp.clip(state.count - 1, 0, last)]
        restart = (state.count == 0) | (lr != prev)
        trace = jnp.where(restart, jnp.zeros_like(state.trace), momentum * state.trace) + updates
        return -lr * trace, _MomentumState(state.count + 1, trace)
    return optax.GradientTransformation(init, update)


def sampler_noise_key(code: jax.Array, seed: int = 0) -> jax.Array:
    """The sampler noise's PRNG key, derived from the starting code (optax's ``init`` gets no key).

    The start ``h0 ~ N(0, 1)`` is drawn from the run's key, so the noise stream is a function of the run
    key too (and of ``z0`` when a start is given): same key, same samples; another key, other noise.
    """
    bits = jax.lax.bitcast_convert_type(jnp.asarray(code, jnp.float32).ravel(), jnp.uint32)
    weights = jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    digest = jnp.sum(bits * weights, dtype=jnp.uint32)  # wraps mod 2^32: any mix that is deterministic
    return jax.random.fold_in(jax.random.key(seed), digest)


class _NoiseState(NamedTuple):
    key: jax.Array


def add_gaussian_noise(std: float, seed: int = 0) -> optax.GradientTransformation:
    """Add ``N(0, std^2)`` to the ascent direction (before any normalization), from a key kept in the state.

    The loop feeds optax ``-d_h``; adding ``-n`` makes the direction ``d_h + n`` exactly as eq. 13 writes it.
    Each update splits the state's key: ``key, sub = split(key)``, ``n = std * normal(sub)``.
    """
    def init(params: jax.Array) -> _NoiseState:
        return _NoiseState(sampler_noise_key(params, seed))

    def update(updates, state: _NoiseState, params=None):
        del params
        key, sub = jax.random.split(state.key)
        noise = std * jax.random.normal(sub, updates.shape, updates.dtype)
        return updates - noise, _NoiseState(key)
    return optax.GradientTransformation(init, update)


__all__ = ["scale_by_mean_abs", "gradient_ascent", "normalized_gradient_ascent", "linear_schedule",
           "progress_gradient_ascent", "momentum_with_resets", "add_gaussian_noise", "sampler_noise_key"]
