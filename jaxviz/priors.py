"""Priors on the optimized image or code: penalties (objectives to subtract) and operators between steps.

Penalties are ``Objective``s on the ``"image"`` or ``"code"`` pseudo-tap returning a positive magnitude,
used as ``objective - weight * penalty``. Operators are applied to the optimized variable after every
update, in order, like an optax ``chain``: ``z <- op(z, ctx)``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax


class OperatorContext(NamedTuple):
    """What an operator may read besides the variable: the step, a PRNG key, the objective's gradient."""

    step: jax.Array          # int32 scalar, 0-based
    key: jax.Array           # PRNG key private to this step and operator chain
    grad: jax.Array          # d objective / d z at the step's forward pass (ascent direction)


Operator = Callable[[jax.Array, OperatorContext], jax.Array]


def chain(*operators: Operator) -> Operator:
    """Apply ``operators`` in order (each gets its own PRNG key)."""
    def apply(z: jax.Array, ctx: OperatorContext) -> jax.Array:
        keys = jax.random.split(ctx.key, max(len(operators), 1))
        for op, key in zip(operators, keys):
            z = op(z, ctx._replace(key=key))
        return z
    return apply
