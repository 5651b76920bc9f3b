"""A generator as a parameterization, and G(E(x)): the two ways every recipe uses a generator ``Model``.

``generator_render(G)`` is the one pure ``(params, codes) -> crop(G(codes))`` per generator, so every
method that optimizes a code shares it (and its compilations); ``generator_inversion`` is the UpconvNet
inversion ``crop(G(E(x)))`` of real images, written once for the demo, the tests and inverse sets.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxviz.core.params import GeneratorCode
from jaxviz.models.generator import crop_to_classifier
from jaxviz.models.model import Model, code_layer, network_function


@functools.lru_cache(maxsize=None)
def _render(module: Any) -> Callable[[Any, jax.Array], jax.Array]:
    apply = network_function(module)

    def render(params: Any, codes: jax.Array) -> jax.Array:
        return crop_to_classifier(apply(params, codes, ("deconv0",))["deconv0"], module.config)
    return render


def generator_render(generator: Model) -> Callable[[Any, jax.Array], jax.Array]:
    """``(generator params, codes) -> crop(G(codes))``, in the classifier's input space."""
    return _render(generator.module)


def generator_code(generator: Model, init_std: float = 1.0, init_mean: float = 0.0) -> GeneratorCode:
    """The generator's code as the optimized variable (DGN-AM's parameterization); aux params: G's weights."""
    return GeneratorCode(generator_render(generator), int(generator.config.code_size), init_std, init_mean)


@functools.lru_cache(maxsize=16)
def _inversion(classifier_module: Any, generator_module: Any, encoder_layer: str) -> Callable:
    encode = network_function(classifier_module)
    render = _render(generator_module)

    def run(classifier_params: Any, generator_params: Any, images: jax.Array) -> jax.Array:
        code = encode(classifier_params, images, (encoder_layer,))[encoder_layer]
        return render(generator_params, code.reshape(code.shape[0], -1))  # a map (pool5) goes in flat, H, W, C
    return jax.jit(run)


def reconstruct(classifier: Model, generator: Model, encoder_layer: str | None = None) -> Callable:
    """The compiled ``(classifier params, generator params, images) -> crop(G(E(images)))``; ``encoder_layer``
    defaults to the generator's code layer."""
    return _inversion(classifier.module, generator.module, encoder_layer or code_layer(generator))


def generator_inversion(classifier: Model, generator: Model, images: Any,
                        encoder_layer: str | None = None) -> jax.Array:
    """``crop(G(E(x0)))`` for NHWC ``images`` in one compiled forward pass (the UpconvNet inversion);
    E is the classifier up to the generator's code layer unless ``encoder_layer`` names another."""
    encoder_layer = encoder_layer or code_layer(generator)
    x = jnp.asarray(images, jnp.float32)
    if x.ndim == 3:
        x = x[None]
    code_shape = jax.eval_shape(lambda p, v: classifier.apply(p, v, (encoder_layer,)), classifier.params, x)
    shape = code_shape[encoder_layer].shape[1:]
    if math.prod(shape) != generator.config.code_size:
        raise ValueError(f"the classifier's {encoder_layer!r} has shape {shape}; the generator takes codes of "
                         f"{generator.config.code_size}")
    return reconstruct(classifier, generator, encoder_layer)(classifier.params, generator.params, x)


__all__ = ["generator_render", "generator_code", "generator_inversion", "reconstruct"]
