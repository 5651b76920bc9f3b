"""Penalties on the optimized image or code: objectives to subtract, ``objective - weight * penalty``.

Each reads the ``"image"`` or ``"code"`` pseudo-tap, returns a positive magnitude summed over the batch,
and composes with the objective algebra. Mahendran & Vedaldi's regularizer, in these terms:
``feature_inversion(...) - la * alpha_norm(6) - lt * tv(2)``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxviz.core.objectives import CODE, IMAGE, Acts, Objective, require_image


def l2(tap: str = IMAGE) -> Objective:
    """Sum of squares of the tap's values over the batch (to subtract from an objective)."""
    def fn(acts: Acts, target: Any) -> jax.Array:
        return jnp.sum(jnp.square(acts[tap]))
    return Objective(fn, frozenset({tap}), f"l2({tap})")


def code_l2() -> Objective:
    """Sum of squares of the generator code (DGN-AM's L2 prior as a penalty rather than a decay)."""
    return l2(CODE)


def alpha_norm(alpha: float = 6.0, tap: str = IMAGE) -> Objective:
    """``sum |x|^alpha`` over the batch (Mahendran & Vedaldi's alpha-norm; they use alpha = 6)."""
    # alpha >= 1 keeps the gradient alpha |x|^(alpha-1) sign(x) finite at x = 0 with no epsilon.
    if alpha < 1:
        raise ValueError(f"alpha_norm needs alpha >= 1 (a norm with a finite gradient at 0), got {alpha}")

    def fn(acts: Acts, target: Any) -> jax.Array:
        return jnp.sum(jnp.abs(acts[tap]) ** alpha)
    return Objective(fn, frozenset({tap}), f"alpha_norm({alpha:g}, {tap})")


def tv(beta: float = 2.0, tap: str = IMAGE, joint_channels: bool = False, eps: float = 1e-8) -> Objective:
    """Total variation ``sum ((x[i,j+1]-x[i,j])^2 + (x[i+1,j]-x[i,j])^2)^(beta/2)`` (survey seed eq. 15).

    The sum runs over the interior (i < H-1, j < W-1, where both differences exist), the batch, and the
    channels: by default each channel is its own term, as in Mahendran & Vedaldi's IJCV 2016 definition
    (sum over u, v, k); ``joint_channels=True`` sums the squared differences over channels inside the
    power instead (a colour-coupled TV). The two agree for beta = 2. For beta < 2 the power's gradient is
    infinite where an image is flat, so ``eps`` is added inside it: ``(d^2 + eps)^(beta/2)``; for beta >= 2
    no epsilon is used and the value is exact.
    """
    if beta <= 0:
        raise ValueError(f"tv needs beta > 0, got {beta}")
    safe = eps if beta < 2 else 0.0

    def fn(acts: Acts, target: Any) -> jax.Array:
        x = acts[tap]
        require_image(x, "tv")
        base = x[:, :-1, :-1, :]
        sq = jnp.square(x[:, :-1, 1:, :] - base) + jnp.square(x[:, 1:, :-1, :] - base)
        if joint_channels:
            sq = jnp.sum(sq, axis=-1)
        return jnp.sum((sq + safe) ** (beta / 2))
    return Objective(fn, frozenset({tap}), f"tv({beta:g}, {tap})")


__all__ = ["l2", "code_l2", "alpha_norm", "tv"]
