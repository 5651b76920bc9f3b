"""MACO (Fel et al. 2023, "Unlocking Feature Visualization for Deep Network with MAgnitude Constrained
Optimization"): only the phase of the image's Fourier spectrum moves; its magnitude is fixed to the mean
amplitude spectrum of real images.

Rendering, per image: the phase ``phi`` (C, H, W) is made Hermitian-antisymmetric,
``phi_h[k, l] = (phi[k, l] - phi[-k, -l]) / 2``, so that ``X = m exp(i phi_h)`` is the full 2-D spectrum of
a real image and ``|fft2(spatial)| = m`` holds exactly (``spatial = ifft2(X)``; Xplique takes an
``irfft2`` of a half spectrum instead, which silently changes the magnitude of its first and last
columns). The spatial image is then standardized (zero mean, unit std over the image, as Xplique does),
mapped from the decorrelated colour basis to colours (``jaxviz.core.colour``), squashed into [0, 1] by a
sigmoid around ``offset`` and converted to the network's input space like ``FourierImage``.

The transparency map of the paper (where the objective cares) is the absolute gradient of the objective
with respect to the image, accumulated over the run: ``transparency``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.core.colour import (channel_mean, check_per_channel, colour_matrix, freeze_matrix,
                                sigmoid_to_input)
from jaxviz.core.loop import Method, Result, run_once_options, run_parts, step_draws, step_options
from jaxviz.core.objectives import CODE, IMAGE, Objective
from jaxviz.core.params import Parameterization
from jaxviz.core.transforms import apply_drawn

STANDARDIZE_EPS = 1e-5  # Xplique's epsilon in the image's standardization


def magnitude_spectrum(images: np.ndarray, colour_sqrt: np.ndarray | None = None) -> np.ndarray:
    """(C, H, W) mean amplitude spectrum per channel of ``images`` (N, H, W, C): ``mean_n |fft2(x_n,c)|``.

    As Xplique computes MACO's buffer from a data set: the magnitude of each image's full 2-D FFT per
    channel, averaged over the images (no windowing, no normalization; the scale does not matter since
    rendering standardizes the image). Pass images in [0, 1] (``pixel / 255``) for comparable numbers.
    With ``colour_sqrt`` (C x C, the matrix the parameterization maps to colours with), the images are
    first taken to the decorrelated basis, ``t = M^-1 x`` per pixel, since that is where the phase lives.
    """
    x = np.asarray(images, np.float64)
    if x.ndim == 3:
        x = x[..., None]  # gray images without a channel axis
    if colour_sqrt is not None:
        x = x @ np.linalg.inv(np.asarray(colour_sqrt, np.float64)).T
    spectra = np.abs(np.fft.fft2(x, axes=(1, 2)))
    return np.moveaxis(spectra.mean(axis=0), -1, 0).astype(np.float32)


def hermitian_phase(phase: jax.Array) -> jax.Array:
    """``(phi[k, l] - phi[-k, -l]) / 2`` over the last two axes: the phase of a real image's spectrum."""
    mirrored = jnp.roll(jnp.flip(phase, axis=(-2, -1)), shift=(1, 1), axis=(-2, -1))
    return 0.5 * (phase - mirrored)


@dataclasses.dataclass(frozen=True)
class MacoImage:
    """Images whose Fourier magnitude is fixed to ``magnitude`` (C, H, W) and whose phase is optimized.

    ``z`` has shape (n, C, H, W): the phase, started at ``sd * N(0, 1)`` (Xplique's std is 1).
    ``magnitude`` is stored flattened (``magnitude_spectrum`` computes it; ``jaxviz.recipes.maco_image_for``
    fits everything to a model's card). ``mean``, ``pixel_scale``, ``bgr`` and ``offset`` mean what they
    mean for ``FourierImage``; ``colour_matrix`` (C x C, row-major) maps the decorrelated basis to colours
    when ``decorrelate`` (None: Lucid's for 3 channels, identity otherwise).
    """

    height: int
    width: int
    channels: int
    magnitude: tuple[float, ...]   # C * H * W values of the fixed amplitude spectrum, row-major
    sd: float = 1.0                         # the starting phase's standard deviation (radians)
    mean: tuple[float, ...] | None = None   # subtracted in the network's channel order (None: zero)
    pixel_scale: float = 255.0              # colours in [0, 1] times this
    bgr: bool = True                        # 3 channels: flip RGB to the network's BGR order
    offset: tuple[float, ...] = (0.0,)      # before the sigmoid: the background colour is sigmoid(offset)
    decorrelate: bool = True                # map the standardized image through the colour matrix
    colour_matrix: tuple[float, ...] | None = None  # C x C, row-major; None: Lucid's (3 ch.) or identity
    is_code: bool = False

    def __post_init__(self) -> None:
        m = np.asarray(self.magnitude, np.float32).ravel()
        if m.size != self.channels * self.height * self.width:
            raise ValueError(f"magnitude has {m.size} values; a {self.channels}x{self.height}x{self.width} "
                             f"spectrum needs {self.channels * self.height * self.width}")
        # A real image's |spectrum| is symmetric, m[k, l] = m[-k, -l]; enforce it so that the render's
        # magnitude is exactly the stored one.
        m = m.reshape(self.channels, self.height, self.width)
        m = 0.5 * (m + np.roll(np.flip(m, axis=(-2, -1)), shift=(1, 1), axis=(-2, -1)))
        object.__setattr__(self, "magnitude", tuple(float(v) for v in m.ravel()))
        object.__setattr__(self, "mean", check_per_channel("mean", self.mean, self.channels))
        object.__setattr__(self, "offset", check_per_channel("offset", self.offset, self.channels))
        object.__setattr__(self, "colour_matrix", freeze_matrix(self.colour_matrix, self.channels))

    def magnitude_array(self) -> np.ndarray:
        """The fixed amplitude spectrum, (C, H, W)."""
        return np.asarray(self.magnitude, np.float32).reshape(self.channels, self.height, self.width)

    def init(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` starting phases, ``sd * N(0, 1)``."""
        return self.sd * jax.random.normal(key, (n, self.channels, self.height, self.width), jnp.float32)

    def spatial(self, z: jax.Array) -> jax.Array:
        """(n, H, W, C) real images whose 2-D FFT magnitude per channel is exactly the fixed one."""
        spectrum = jnp.asarray(self.magnitude_array()) * jnp.exp(1j * hermitian_phase(z))
        return jnp.moveaxis(jnp.real(jnp.fft.ifft2(spectrum, axes=(-2, -1))), 1, -1)

    def render(self, aux_params: Any, z: jax.Array) -> jax.Array:
        """(n, H, W, C) images in the network's input space; ``aux_params`` is unused."""
        x = self.spatial(z)
        x = x - x.mean(axis=(1, 2, 3), keepdims=True)
        x = x / (x.std(axis=(1, 2, 3), keepdims=True) + STANDARDIZE_EPS)
        if self.decorrelate:
            x = x @ jnp.asarray(colour_matrix(self.colour_matrix, self.channels).T)
        return sigmoid_to_input(x, self.offset, self.bgr, self.pixel_scale, channel_mean(self.mean, self.channels))


def _taps(objective: Objective) -> tuple[str, ...]:
    taps = set(objective.network_taps)
    if objective.unit_layer is not None:
        taps.add(objective.unit_layer)
    return tuple(sorted(taps))


def transparency(net: Any, objective: Objective, param: Parameterization, method: Method, key: jax.Array,
                 target: Any = None, aux_params: Any = None) -> tuple[Result, jax.Array]:
    """One run of ``optimize`` and MACO's transparency map: ``sum_steps |d objective / d image|``.

    ``net`` is a ``jaxviz.core.run.Network``. Each step's gradient is taken with respect to the rendered
    image through the same robustness transform that step uses (the run's own draws), as Xplique sums the
    absolute image gradient of its crops' objective. Returns the run's ``Result`` (equal to
    ``optimize``'s) and the map, shaped like the run's images (n, H, W, C). Host-driven: one compiled step
    and one compiled image gradient per step.
    """
    parts = run_parts(net.function, objective, param, method)
    taps = _taps(objective)

    def value(image, z, net_params, t, drawn):
        seen = image if method.transform is None else apply_drawn(method.transform, drawn, image)
        acts = dict(net.function(net_params, seen, taps))
        acts[IMAGE] = image
        if param.is_code:
            acts[CODE] = z
        return objective(acts, t)

    @jax.jit
    def image_gradient(net_params, aux, t, z, draws, i):
        # The step's own transform values, drawn at the start of the run.
        return jax.grad(value)(param.render(aux, z), z, net_params, t, step_draws(draws, i))

    step = jax.jit(parts.step, compiler_options=step_options())
    init, finish = (jax.jit(f, compiler_options=run_once_options()) for f in (parts.init, parts.finish))
    carry = init(net.params, aux_params, target, key)
    total = jnp.zeros_like(param.render(aux_params, carry.z))
    for i in range(method.steps):
        index = jnp.asarray(i, jnp.int32)
        grad = image_gradient(net.params, aux_params, target, carry.z, carry.transform_draws, index)
        total = total + jnp.where(carry.alive, jnp.abs(grad), 0.0)  # a stopped run adds nothing
        carry = step(net.params, aux_params, target, carry, index)
    return finish(net.params, aux_params, target, carry), total


__all__ = ["MacoImage", "magnitude_spectrum", "hermitian_phase", "transparency", "STANDARDIZE_EPS"]
