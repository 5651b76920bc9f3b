"""DeepDream (Mordvintsev et al. 2015): amplify what a layer (or one unit) already sees in an image.

Gradient ascent on the layer's L2 norm (or its mean), with the step divided by its mean |g|, the image
rolled by a random offset before each forward pass (the gradient rolls back through it), over octaves:
the image is processed at sizes ``H / scale^k`` for k = octaves-1 .. 0, and the detail dreamed at one
size is upsampled and added to the image at the next. Each octave is a run of the shared loop
(``jaxviz.core.optimize``) whose variable is the image at that octave's size; a network with a fixed
input size sees it resized (bilinear) to that size, so a coarse octave can only add coarse detail.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.core import operators
from jaxviz.core.loop import Method
from jaxviz.core.objectives import Acts, Objective
from jaxviz.core.run import optimize
from jaxviz.core.transforms import RandomTransform
from jaxviz.core.updates import normalized_gradient_ascent
from jaxviz.lenses.backprop import check_units, layer_shape
from jaxviz.models import preprocessing as pp

REDUCTIONS = ("l2", "mean")


class Dream(NamedTuple):
    """A dreamed image and how the layer's L2 norm grew at each octave."""

    image: np.ndarray          # (H, W, C) network space, the input's shape
    norm_before: np.ndarray    # (octaves,) the layer's (or unit's) L2 norm at the start of each octave
    norm_after: np.ndarray     # (octaves,) the same at its end
    sizes: tuple[tuple[int, int], ...]  # (height, width) of each octave, smallest first


def roll_jitter(max_shift: int) -> RandomTransform:
    """Roll the images by one random offset in ``[-max_shift, max_shift]`` per axis (wrapping around)."""
    if max_shift < 0:
        raise ValueError(f"jitter needs max_shift >= 0, got {max_shift}")

    def draw_offset(key: jax.Array, n: int) -> jax.Array:
        return jax.random.randint(key, (2,), -max_shift, max_shift + 1)

    def apply(d: jax.Array, x: jax.Array) -> jax.Array:
        if max_shift == 0:
            return x
        return jnp.roll(x, (d[0], d[1]), axis=(1, 2))
    return RandomTransform(draw_offset, apply)


def dream_objective(layer: str, unit: int | None = None, reduce: str = "l2") -> Objective:
    """Half the squared L2 norm (``"l2"``: its gradient is the activation) or the mean of a layer or unit."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")

    def fn(acts: Acts, target: Any) -> jax.Array:
        a = acts[layer] if unit is None else acts[layer][..., unit]
        return 0.5 * jnp.sum(jnp.square(a)) if reduce == "l2" else jnp.mean(a) * a.shape[0]
    return Objective(fn, frozenset({layer}), f"deep_dream({layer}{'' if unit is None else f', {unit}'}, {reduce})")


@dataclasses.dataclass(frozen=True)
class OctaveImage:
    """The image at an octave's size, rendered at the network's input size (bilinear; identity when equal)."""

    shape: tuple[int, int, int]       # the variable: H, W, C of this octave
    network_hw: tuple[int, int]       # what the network takes
    is_code: bool = False

    def init(self, key: jax.Array, n: int) -> jax.Array:
        """Zeros: an octave always starts from the image it is given."""
        del key
        return jnp.zeros((n, *self.shape), jnp.float32)

    def render(self, aux_params: Any, z: jax.Array) -> jax.Array:
        """The octave image resized to the network's input size."""
        if tuple(z.shape[1:3]) == tuple(self.network_hw):
            return z
        return jax.image.resize(z, (z.shape[0], *self.network_hw, z.shape[-1]), "linear")


def octave_sizes(height: int, width: int, octaves: int, scale: float) -> tuple[tuple[int, int], ...]:
    """(H, W) of each octave, smallest first, the last the image's own size (each side at least 1)."""
    if octaves < 1:
        raise ValueError(f"octaves must be >= 1, got {octaves}")
    if not scale > 1.0:
        raise ValueError(f"octave_scale must be > 1, got {scale}")
    return tuple((max(1, round(height / scale ** k)), max(1, round(width / scale ** k)))
                 for k in range(octaves - 1, -1, -1))


def resize(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """Bilinear resize of (N, H, W, C) images to ``hw`` (antialiased when shrinking)."""
    if tuple(x.shape[1:3]) == tuple(hw):
        return x
    return jax.image.resize(x, (x.shape[0], *hw, x.shape[-1]), "linear")


def layer_norm(model: Any, image: jax.Array, layer: str, unit: int | None = None) -> float:
    """The L2 norm of ``layer``'s activation (or of channel ``unit``) on one network-space image (1, H, W, C)."""
    image = jnp.asarray(image, jnp.float32)
    return float(_norm_at(model.function, layer, unit, tuple(image.shape[1:3]), model.params, image))


@functools.partial(jax.jit, static_argnames=("function", "layer", "unit", "hw"))
def _norm_at(function, layer, unit, hw, params, z):
    """The layer's (or unit's) L2 norm on ``z`` seen at the network's size ``hw``."""
    a = function(params, resize(z, hw), (layer,))[layer]
    a = a if unit is None else a[..., unit]
    return jnp.sqrt(jnp.sum(jnp.square(a)))


@functools.partial(jax.jit, static_argnames=("size",))
def _octave_start(x, previous, previous_base, low, high, size):
    """An octave's base (the image at its size), its start (base + the detail dreamed so far, upsampled,
    clipped) and its pixel bounds; one program per octave instead of a dozen eager resizes."""
    base = resize(x, size)
    start = base + resize(previous - previous_base, size)
    if low is None:
        return base, start, None, None
    lo, hi = resize(low, size), resize(high, size)
    return base, jnp.clip(start, lo, hi), lo[0], hi[0]


def pixel_bounds(preprocessing: dict | None, hw: tuple[int, int], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Network-space images of black and white (the valid pixel range) at size ``hw``."""
    black = np.zeros((1, *hw) + ((3,) if channels == 3 else ()), np.uint8)
    low = pp.to_network(black, preprocessing)[0]
    high = pp.to_network(black + 255, preprocessing)[0]
    return np.minimum(low, high), np.maximum(low, high)


def deep_dream(model: Any, image: Any, layer: str, unit: int | None = None, *, octaves: int = 3,
               octave_scale: float = 1.4, steps_per_octave: int = 10, lr: float = 1.5, jitter: int = 2,
               reduce: str = "l2", clip: bool = True, seed: int = 0) -> Dream:
    """DeepDream of ``layer`` (or of its channel ``unit``) on one network-space image (H, W, C).

    ``lr`` is the step in units of the mean |gradient| (the normalized step of the original code);
    ``jitter`` the largest roll in pixels; ``clip`` keeps the pixels in the card's valid range. Returns the
    dreamed image (the input's shape) and the layer's L2 norm before and after each octave.
    """
    x = jnp.asarray(image, jnp.float32)
    x = x[None] if x.ndim == 3 else x
    if x.ndim != 4 or x.shape[0] != 1 or tuple(x.shape[1:]) != tuple(model.input_shape):
        raise ValueError(f"deep_dream takes one image of the network's input shape {tuple(model.input_shape)}, "
                         f"got {tuple(np.shape(image))}")
    if steps_per_octave < 1:
        raise ValueError(f"steps_per_octave must be >= 1, got {steps_per_octave}")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr}")
    if unit is not None:
        check_units(model, layer, [unit])
    else:
        layer_shape(model, layer)  # an unknown layer is named here, before any work
    hw, channels = tuple(x.shape[1:3]), int(x.shape[-1])
    sizes = octave_sizes(*hw, octaves, octave_scale)
    objective = dream_objective(layer, unit, reduce)
    low, high = pixel_bounds(model.preprocessing or None, hw, channels) if clip else (None, None)
    key = jax.random.key(seed)
    z = base = jnp.zeros((1, *sizes[0], channels), jnp.float32)
    bounds = (None, None) if not clip else tuple(jnp.asarray(b)[None] for b in (low, high))
    before, after = [], []
    for k, size in enumerate(sizes):
        base, start, lo, hi = _octave_start(x, z, base, *bounds, size)
        method = Method(steps_per_octave, normalized_gradient_ascent(lr),
                        operator=operators.clip_value(lo, hi) if clip else None,
                        transform=roll_jitter(min(jitter, min(hw) - 1)), name="deep_dream")
        param = OctaveImage((*size, channels), hw)
        before.append(float(_norm_at(model.function, layer, unit, hw, model.params, start)))
        z = optimize(model, objective, param, key=jax.random.fold_in(key, k), method=method, z0=start).z
        after.append(float(_norm_at(model.function, layer, unit, hw, model.params, z)))
    dreamed = np.asarray(z)[0]  # the last octave is the image's own size
    return Dream(dreamed, np.asarray(before, np.float32), np.asarray(after, np.float32), sizes)


__all__ = ["Dream", "REDUCTIONS", "roll_jitter", "dream_objective", "OctaveImage", "octave_sizes", "resize",
           "layer_norm", "pixel_bounds", "deep_dream"]
