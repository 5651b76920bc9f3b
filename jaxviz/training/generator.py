"""Training a (scaled-down) fc6 generator to invert a classifier's fc6 code, DeePSiM-style.

Loss on a batch of real images x with codes h = E(x) (classifier fc6 after ReLU, dropout off):
``image_weight * |crop(G(h)) - x|^2 / var(x) + feature_weight * |E(crop(G(h))) - h|^2 / mean(h^2)``,
i.e. an image loss plus a feature loss in the classifier's own fc6 space (the classifier is frozen).
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxviz.models.caffenet import CaffeNet
from jaxviz.models.generator import DECONV_LAYERS, FC_LAYERS, Generator, GeneratorConfig, crop_to_classifier
from jaxviz.training.classifier import make_optimizer
from jaxviz.training.common import Params, batch_indices, batched, data_dependent_init, random_shift


class GeneratorTrainConfig(NamedTuple):
    """Hyper-parameters of the generator run."""

    steps: int = 1200
    batch_size: int = 64
    learning_rate: float = 1e-3
    image_weight: float = 1.0
    feature_weight: float = 1.0
    max_shift: int = 1          # augmentation of the real images whose codes are inverted
    init_batch: int = 256


def init_generator(gen: Generator, codes: jax.Array, key: jax.Array, out_std: float) -> Params:
    """Generator params with unit-std hidden layers on ``codes`` and an output of std ``out_std``."""
    params = gen.init(key, codes[:1])["params"]

    def apply(p, inputs, taps):
        return gen.apply({"params": p}, inputs, taps)

    names = FC_LAYERS + DECONV_LAYERS
    targets = [(n, f"{n}:pre", 1.0) for n in names[:-1]] + [(names[-1], names[-1], out_std)]
    return data_dependent_init(apply, params, codes, targets)


def make_losses(gen: Generator, clf: CaffeNet, cfg: GeneratorTrainConfig, x_var: float) -> Callable:
    """``losses(g_params, c_params, x) -> (total, {"image", "feature"})`` on a batch of network-space x."""
    gcfg = gen.config

    def losses(g_params, c_params, x):
        h = jax.lax.stop_gradient(clf.apply({"params": c_params}, x, taps=("fc6",))["fc6"])
        image = crop_to_classifier(gen.apply({"params": g_params}, h, ("deconv0",))["deconv0"], gcfg)
        image_loss = jnp.mean(jnp.square(image - x)) / x_var
        h_rec = clf.apply({"params": c_params}, image, taps=("fc6",))["fc6"]
        feature_loss = jnp.mean(jnp.square(h_rec - h)) / (jnp.mean(jnp.square(h)) + 1e-8)
        total = cfg.image_weight * image_loss + cfg.feature_weight * feature_loss
        return total, {"image": image_loss, "feature": feature_loss}

    return losses


def make_train_step(gen: Generator, clf: CaffeNet, optimizer: optax.GradientTransformation,
                    cfg: GeneratorTrainConfig, x_var: float, background: float) -> Callable:
    """A jitted ``step(g_params, opt_state, c_params, x, key) -> (g_params, opt_state, parts)``."""
    losses = make_losses(gen, clf, cfg, x_var)

    @jax.jit
    def step(g_params, opt_state, c_params, x, key):
        x = random_shift(key, x, cfg.max_shift, background)
        (total, parts), grads = jax.value_and_grad(losses, has_aux=True)(g_params, c_params, x)
        updates, opt_state = optimizer.update(grads, opt_state, g_params)
        return optax.apply_updates(g_params, updates), opt_state, {**parts, "total": total}

    return step


def make_reconstruct(gen: Generator, clf: CaffeNet) -> Callable:
    """A jitted ``reconstruct(params, x) -> crop(G(E(x)))`` with ``params = (g_params, c_params)``."""

    @jax.jit
    def reconstruct(params, x):
        g_params, c_params = params
        h = clf.apply({"params": c_params}, x, taps=("fc6",))["fc6"]
        return crop_to_classifier(gen.apply({"params": g_params}, h, ("deconv0",))["deconv0"], gen.config)

    return reconstruct


def reconstruct(gen: Generator, clf: CaffeNet, g_params: Params, c_params: Params,
                x: np.ndarray) -> np.ndarray:
    """crop(G(E(x))) for network-space ``x``, in batches."""
    return batched(make_reconstruct(gen, clf), (g_params, c_params), x)


def train_generator(x: np.ndarray, clf: CaffeNet, c_params: Params, config: GeneratorConfig,
                    cfg: GeneratorTrainConfig, seed: int, log: Callable[[str], None] = print,
                    log_every: int = 250) -> tuple[Params, list[tuple[int, dict[str, float]]]]:
    """Train G to invert ``clf``'s fc6 on network-space ``x``; returns params and the loss history."""
    gen = Generator(config)
    init_key, step_key = jax.random.split(jax.random.PRNGKey(seed + 1))  # +1: not the classifier's stream
    rng = np.random.default_rng(seed + 1)
    init_x = jnp.asarray(x[rng.choice(len(x), min(cfg.init_batch, len(x)), replace=False)])
    codes = clf.apply({"params": c_params}, init_x, taps=("fc6",))["fc6"]
    x_std = float(np.std(x))
    g_params = init_generator(gen, codes, init_key, out_std=0.1 * x_std)
    optimizer = make_optimizer(cfg.learning_rate, cfg.steps)
    opt_state = optimizer.init(g_params)
    step = make_train_step(gen, clf, optimizer, cfg, x_std ** 2, float(x.min()))
    history, running, t0 = [], [], time.perf_counter()
    for i, idx in enumerate(batch_indices(len(x), cfg.batch_size, cfg.steps, rng)):
        g_params, opt_state, parts = step(g_params, opt_state, c_params, x[idx],
                                          jax.random.fold_in(step_key, i))
        running.append(parts)
        if (i + 1) % log_every == 0 or i + 1 == cfg.steps:
            got = jax.device_get(running)
            history.append((i + 1, {k: float(np.mean([p[k] for p in got])) for k in got[0]}))
            running = []
            log(f"generator step {i + 1}/{cfg.steps}: " +
                ", ".join(f"{k} {v:.4f}" for k, v in history[-1][1].items()) +
                f" ({time.perf_counter() - t0:.0f} s)")
    return g_params, history
