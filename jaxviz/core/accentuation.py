"""Feature accentuation (Hamblin et al. 2024, faccent): start from a real image and stay close to it.

Two parts. ``SeededFourier`` is a ``FourierImage`` whose variable starts at the spectrum of a given image
(``fourier_inverse`` inverts ``FourierImage.render`` exactly, up to a small margin that keeps the sigmoid's
inverse finite), so the run begins at the seed rather than at noise. ``proximity`` is the term that keeps
the result near the seed, to subtract from the objective: the squared Euclidean distance to a reference,
averaged over the tap's values (``mean((a - a_seed)^2)``) and summed over the batch. faccent measures
closeness in an intermediate layer's activations of the seed (its ``l2_compare``: the Euclidean norm over
channels of the difference, averaged over positions, not squared); the square here is smooth at the seed,
where the norm's gradient is undefined. With ``tap="image"`` it is the distance of the images themselves
in the network's input space.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.core.fourier import LUCID_SPECTRUM_DIVISOR, FourierImage, rfft2d_freqs, spectrum_scale
from jaxviz.core.objectives import IMAGE, Acts, Objective

SEED_MARGIN = 0.01  # seed colours are clipped to [margin, 1 - margin] so that their logit stays finite


def fourier_inverse(param: FourierImage, image: np.ndarray, margin: float = SEED_MARGIN) -> np.ndarray:
    """The variable (channels, H, Wf, 2) that ``param`` renders as ``image`` (H, W, C, network space).

    Undoes each step of the render: the mean and scale, the BGR flip, the sigmoid and ``offset`` (colours
    clipped to ``[margin, 1 - margin]`` first), the colour matrix, Lucid's divisor and the spectrum's
    scale. Odd widths repeat the last column, since Lucid's layout renders one extra column and crops it.
    """
    x = np.asarray(image, np.float64)
    colours = (x + param.channel_mean()) / param.pixel_scale
    if param.bgr and param.channels == 3:
        colours = colours[..., ::-1]
    colours = np.clip(colours, margin, 1.0 - margin)
    t = np.log(colours / (1.0 - colours)) - np.asarray(param.offset, np.float64)
    if param.decorrelate:
        t = t @ np.linalg.inv(np.asarray(param.colours(), np.float64).T)
    pixels = np.moveaxis(t * LUCID_SPECTRUM_DIVISOR, -1, 0)          # (C, H, W)
    wf = rfft2d_freqs(param.height, param.width).shape[1]
    padded_width = 2 * (wf - 1)
    if padded_width > param.width:
        pixels = np.concatenate([pixels, pixels[..., -1:]], axis=-1)
    spectrum = np.fft.rfft2(pixels, s=(param.height, padded_width)) / spectrum_scale(
        param.height, param.width, param.decay_power)
    return np.stack([spectrum.real, spectrum.imag], axis=-1).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SeededFourier:
    """A ``FourierImage`` whose variable starts at the spectrum of ``start`` (faccent's seeded image).

    ``start`` is the seed image (H, W, C) in the network's input space, stored flattened; ``noise`` adds
    ``noise * N(0, 1)`` to the starting spectrum (0: every run starts exactly at the seed).
    """

    base: FourierImage
    start: tuple[float, ...]     # the seed image, H * W * C values, row-major, network space
    noise: float = 0.0
    margin: float = SEED_MARGIN
    is_code: bool = False

    def __post_init__(self) -> None:
        values = tuple(float(v) for v in np.asarray(self.start, np.float32).ravel())
        expected = self.base.height * self.base.width * self.base.channels
        if len(values) != expected:
            raise ValueError(f"the seed has {len(values)} values; the image needs {expected}")
        object.__setattr__(self, "start", values)

    def start_image(self) -> np.ndarray:
        """The seed image, (H, W, C)."""
        return np.asarray(self.start, np.float32).reshape(self.base.height, self.base.width, self.base.channels)

    def init(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` starting spectra: the seed's, plus ``noise * N(0, 1)``."""
        z = jnp.asarray(fourier_inverse(self.base, self.start_image(), self.margin))
        z = jnp.broadcast_to(z, (n, *z.shape))
        return z + self.noise * jax.random.normal(key, z.shape, jnp.float32)

    def render(self, aux_params: Any, z: jax.Array) -> jax.Array:
        """The base ``FourierImage``'s render."""
        return self.base.render(aux_params, z)


def proximity(reference: Any, tap: str = IMAGE) -> Objective:
    """``sum_batch mean((acts[tap] - reference)^2)``: how far from the seed, to subtract from an objective."""
    ref = np.asarray(reference, np.float32)

    def fn(acts: Acts, target: Any) -> jax.Array:
        a = acts[tap]
        return jnp.sum(jnp.mean(jnp.square(a - jnp.asarray(ref)).reshape(a.shape[0], -1), axis=1))
    return Objective(fn, frozenset({tap}), f"proximity({tap})")


__all__ = ["SeededFourier", "fourier_inverse", "proximity", "SEED_MARGIN"]
