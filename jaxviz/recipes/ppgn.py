"""The PPGN-style sampler of the survey seed (eq. 11/13; PPGN's public ``sampler.py``) in the shared loop.

``d_h = eps1 (E(G(h)) - h) + eps2 J_G^T d log p(y_c|x)/dx + N(0, eps3^2)``, ``h += lr d_h / mean|d_h|``,
clip to ``[0, 30]``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxviz.core import operators
from jaxviz.core.loop import Method
from jaxviz.core.objectives import CODE, Acts, Objective, unit_values
from jaxviz.core.updates import add_gaussian_noise, linear_schedule, scale_by_mean_abs
from jaxviz.models.model import Model, code_layer
from jaxviz.recipes.generator import generator_code
from jaxviz.recipes.preset import Preset


def ppgn_prior(encoder_layer: str = "fc6") -> Objective:
    """An objective whose gradient w.r.t. the code is exactly ``E(G(h)) - h`` (its value is 0).

    ``sum(stop_gradient(E(G(h)) - h) * (h - stop_gradient(h)))``: the reconstruction loop's "denoising"
    direction of PPGN (Alain & Bengio's ``d log p(h)/dh``), which is not the gradient of any scalar.
    """
    def fn(acts: Acts, target: Any) -> jax.Array:
        h, e = acts[CODE], acts[encoder_layer]
        e = e.reshape(e.shape[0], -1)  # a map code (pool5) is flat in H, W, C order
        if e.shape != h.shape:
            raise ValueError(f"the sampler's encoder layer {encoder_layer!r} has shape {e.shape[1:]} but the "
                             f"generator's code has {h.shape[1:]}: E must map images to codes")
        return jnp.sum(jax.lax.stop_gradient(e - h) * (h - jax.lax.stop_gradient(h)))
    return Objective(fn, frozenset({encoder_layer, CODE}), f"ppgn_prior({encoder_layer})")


def ppgn_condition(class_layer: str = "fc8", index: int | None = None, exact: bool = True) -> Objective:
    """``log p(y_c|x)`` with its exact gradient, or PPGN's diagonal approximation ``(1 - s_c) d a_c/dx``.

    Either way the value is ``log softmax_c``; with ``exact=False`` the gradient is the public code's
    one-hot ``(1 - s_c)`` at the target unit, dropping the ``-sum_{j != c} s_j d a_j/dx`` terms.
    """
    def fn(acts: Acts, target: Any) -> jax.Array:
        a = unit_values(acts, class_layer, "center")
        c = jnp.asarray(target if index is None else index, jnp.int32)
        log_s = jnp.take(jax.nn.log_softmax(a, axis=-1), c, axis=-1)
        if exact:
            return log_s.sum()
        a_c = jnp.take(a, c, axis=-1)
        sg = jax.lax.stop_gradient
        return jnp.sum(sg(log_s) + sg(1.0 - jnp.exp(log_s)) * (a_c - sg(a_c)))
    kind = "exact" if exact else "diagonal"
    return Objective(fn, frozenset({class_layer}), f"ppgn_condition({class_layer}, {index}, {kind})",
                     class_layer, "center", index)


def ppgn_sampler(generator: Model, encoder_layer: str | None = None, class_layer: str = "fc8", eps1: float = 1e-5,
                 eps2: float = 1.0, eps3: float = 1e-17, lr: float = 1.0, steps: int = 200,
                 clip: tuple[float, float] = (0.0, 30.0), exact_log_softmax: bool = True,
                 lr_end: float | None = None, noise_seed: int = 0) -> Preset:
    """The PPGN-style sampler (survey seed eq. 11/13; PPGN's public ``sampler.py``); the class is the target.

    Per step: ``d_h = eps1 (E(G(h)) - h) + eps2 J_G^T d log p(y_c|x)/dx + N(0, eps3^2)``,
    ``h += lr_i d_h / mean|d_h|``, ``h = clip(h, 0, 30)``; ``E`` is the classifier up to ``encoder_layer``
    (after ReLU; default the generator's code layer), so E(G(h)) and the class gradient come from one forward pass. The epsilon names follow
    PPGN and ``methods.md`` (eps1 the prior, eps2 the condition); the survey's eq. 11 swaps them.
    The noise is added to ``d_h`` before the mean-abs normalization, as eq. 13 and the public code do
    (an operator would add it after the step), by an optax transform keyed from the starting code
    (``sampler_noise_key``). ``exact_log_softmax=False`` uses the public code's diagonal gradient.
    ``steps`` updates are made and ``Result.image`` is ``G`` of the final code, which is the public code's
    last sample. ``lr_end`` (default: ``lr``) gives its linear step-size schedule.
    """
    encoder_layer = encoder_layer or code_layer(generator)
    objective = eps1 * ppgn_prior(encoder_layer) + eps2 * ppgn_condition(class_layer, None, exact_log_softmax)
    schedule = linear_schedule(lr, lr if lr_end is None else lr_end, steps)
    method = Method(
        steps=steps,
        optimizer=optax.chain(add_gaussian_noise(eps3, noise_seed), scale_by_mean_abs(),
                              optax.scale_by_learning_rate(schedule)),
        operator=operators.clip_code(clip[0], clip[1]),
        stop_on_zero_grad=True, name="ppgn_sampler")
    return Preset(generator_code(generator), method, generator.params, objective, name="ppgn_sampler")


__all__ = ["ppgn_prior", "ppgn_condition", "ppgn_sampler"]
