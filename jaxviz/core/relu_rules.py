"""How a ReLU passes its backward signal: rules chosen when a function is traced.

``models.layers.leaky_relu`` reads the rule in force (``relu_backward(rule)``, a jit-cache-sensitive
context); the lenses project a unit through the network under one, and the optimization loop takes a run's
first gradients under the redirected one (``Method.redirected_relu_steps``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

RELU_RULES = ("gradient", "deconvnet", "guided", "redirected")
"""How a ReLU passes the backward signal ``g`` (x: its input; slope s: ``negative_slope``, 0 for a plain ReLU):
``"gradient"`` ``g * (x > 0 ? 1 : s)`` (the true derivative; Simonyan et al. 2014's saliency);
``"deconvnet"`` ``g > 0 ? g : s * g``, the ReLU applied to the signal, ignoring the forward mask (Zeiler &
Fergus 2014); ``"guided"`` the gradient, zeroed where ``g <= 0`` (Springenberg et al. 2015);
``"redirected"`` Lucid's redirected ReLU gradient (``lucid/misc/redirected_relu_grad.py``): the gradient,
except for an example (index of axis 0) whose gradient is zero everywhere in this ReLU's input; there ``g``
passes wherever it would raise the output (``g > 0``, the signal of a quantity to maximize) and also where
``x > 0``, so a unit that is off still learns which way turns it on. ``g`` is the cotangent of a quantity
being maximized (jaxviz's objectives): Lucid's ``grad > 0`` test is on a loss, the opposite sign."""

# A jit-cache-sensitive context: a program traced under one rule is never reused under another.
_RELU_RULE = jax.make_user_context(None)


def relu_backward(rule: str):
    """Context manager: every ``leaky_relu`` traced inside passes its backward signal by ``rule``."""
    if rule not in RELU_RULES:
        raise ValueError(f"unknown ReLU backward rule {rule!r}; rules: {', '.join(RELU_RULES)}")
    return _RELU_RULE(rule)


def _forward_relu(x: jax.Array, slope: float) -> jax.Array:
    return jnp.maximum(x, 0.0) if slope == 0.0 else jnp.where(x > 0, x, slope * x)


def _ruled_relu(backward) -> "jax.custom_vjp":
    """A ReLU whose vjp is ``backward(x, slope, g)``."""
    @functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
    def relu(x, slope):
        return _forward_relu(x, slope)

    def fwd(x, slope):
        return _forward_relu(x, slope), x

    def bwd(slope, x, g):
        return (backward(x, slope, g),)

    relu.defvjp(fwd, bwd)
    return relu


def _gradient_rule(x, slope, g):
    return jnp.where(x > 0, g, slope * g)


def _deconvnet_rule(x, slope, g):
    del x  # the DeconvNet rectifies the signal itself; the forward pass's mask plays no part
    return jnp.where(g > 0, g, slope * g)


def _guided_rule(x, slope, g):
    return jnp.where(g > 0, _gradient_rule(x, slope, g), jnp.zeros_like(g))


def _redirected_rule(x, slope, g):
    ordinary = _gradient_rule(x, slope, g)
    # Off and pushed further down: the one place the redirected signal is blocked (Lucid's neg_pushing_lower).
    redirected = jnp.where((x <= 0) & (g < 0), slope * g, g)
    # Per example: the batch axis is 0, so a (batch,) input is one value per example (under vmap each mapped
    # run sees only its own examples).
    axes = tuple(range(1, x.ndim))
    blocked = ~jnp.any(ordinary != 0, axis=axes, keepdims=True)
    return jnp.where(blocked, redirected, ordinary)


_RULED = {"gradient": _ruled_relu(_gradient_rule), "deconvnet": _ruled_relu(_deconvnet_rule),
               "guided": _ruled_relu(_guided_rule), "redirected": _ruled_relu(_redirected_rule)}


def current() -> str | None:
    """The rule in force where the caller is being traced (None: the ordinary gradient, no custom vjp)."""
    return _RELU_RULE.value


def ruled_relu(rule: str):
    """The (leaky) ReLU ``relu(x, slope)`` whose vjp follows ``rule``."""
    return _RULED[rule]


__all__ = ["RELU_RULES", "relu_backward", "current", "ruled_relu"]
