"""Lucid's default image parameterization: a decorrelated Fourier spectrum, sigmoid-squashed colours.

The optimized variable is the real and imaginary parts of each channel's 2-D real spectrum. Rendering
scales the spectrum by ``1 / max(f, 1 / max(H, W))^decay_power`` (f in cycles per pixel) so that every
frequency starts with about the energy natural images have there, inverts it, maps the channels from a
decorrelated colour basis to RGB, squashes them into [0, 1] with a sigmoid, and converts to the network's
input space (Caffe: BGR, 0-255, mean subtracted). Gradient steps on the spectrum are then steps in a
whitened space, which is why this parameterization needs few hand-designed priors.

Constants and the spectrum layout follow tensorflow/lucid: ``rfft2d_freqs`` and ``fft_image`` in
lucid/optvis/param/spatial.py (odd widths keep one extra column and crop one pixel, energy scaled by
sqrt(H W), the final division by 4), ``color_correlation_svd_sqrt`` and ``_linear_decorelate_color`` in
lucid/optvis/param/color.py (matrix normalized by its largest column norm, ``rgb = C t`` per pixel).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.core.colour import COLOR_CORRELATION_NORMALIZED, COLOR_CORRELATION_SVD_SQRT, colour_matrix, freeze_matrix

# lucid/optvis/param/spatial.py divides the inverted spectrum by 4 ("TODO: is that a magic constant?").
LUCID_SPECTRUM_DIVISOR = 4.0


def rfft2d_freqs(height: int, width: int) -> np.ndarray:
    """(H, Wf) radial frequencies of a real 2-D spectrum; odd widths keep one extra column, as Lucid does."""
    fy = np.fft.fftfreq(height)[:, None]
    # An odd width keeps w // 2 + 2 columns and inverts to w + 1 pixels, cropped to w (Lucid's rule).
    fx = np.fft.fftfreq(width)[: width // 2 + (2 if width % 2 else 1)]
    return np.sqrt(fx * fx + fy * fy)


def live_spectrum_mask(height: int, width: int) -> np.ndarray:
    """(H, Wf, 2) ones, zero on the imaginary parts an inverse real FFT discards (self-conjugate bins).

    Those bins (DC and Nyquist rows and columns) have real spectra, so ``irfft2`` ignores their imaginary
    parts and their true gradient is zero. The FFT's rounding leaves ~1e-10 there instead, which Adam's
    normalized step would turn into full-size random walks of variables that draw nothing; masking them
    keeps their gradient exactly zero, so they stay at their start and runs compare equal across batch sizes.
    """
    wf = rfft2d_freqs(height, width).shape[1]
    mask = np.ones((height, wf, 2), np.float32)
    rows = [0] + ([height // 2] if height % 2 == 0 else [])
    mask[np.ix_(rows, [0, wf - 1], [1])] = 0.0  # the padded width 2 (wf - 1) is even: wf - 1 is Nyquist
    return mask


def spectrum_scale(height: int, width: int, decay_power: float) -> np.ndarray:
    """(H, Wf) factor applied to the spectrum: ``sqrt(H W) / max(f, 1 / max(H, W))^decay_power``."""
    freqs = rfft2d_freqs(height, width)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(height, width)) ** decay_power
    # sqrt(H W) makes the inverse transform unitary, so learning rates carry over from pixel space.
    return (scale * np.sqrt(height * width)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class FourierImage:
    """Images as decorrelated Fourier spectra (Lucid's ``image(..., fft=True, decorrelate=True)``).

    ``z`` has shape (n, channels, H, Wf, 2): the real and imaginary parts of each channel's spectrum
    (the imaginary parts of self-conjugate bins, which draw nothing, are masked: ``live_spectrum_mask``).
    ``mean`` is subtracted from ``pixel_scale * colours`` in the network's channel order (None: zero);
    ``jaxviz.recipes.fourier_image_for`` fills it, the scale and the channel order from a model's card.
    With 3 channels the colours are flipped to BGR when ``bgr``. Colour decorrelation works for any
    channel count (``jaxviz.core.colour``): ``colour_matrix`` (C x C, row-major, e.g.
    ``colour_sqrt_from_images`` of the data) maps the decorrelated basis to colours; without one, 3
    channels use Lucid's ImageNet matrix and any other count the identity (a gray image is its own channel).
    """

    height: int
    width: int
    channels: int = 3
    decay_power: float = 1.0
    sd: float = 0.01
    decorrelate: bool = True
    mean: tuple[float, ...] | None = None
    pixel_scale: float = 255.0
    bgr: bool = True
    offset: tuple[float, ...] = (0.0,)  # per RGB channel (or one), before the sigmoid: the start colour
                                        # is sigmoid(offset); Lucid's 0 is mid-grey
    colour_matrix: tuple[float, ...] | None = None  # C x C, row-major; None: Lucid's (3 ch.) or identity
    is_code: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "colour_matrix", freeze_matrix(self.colour_matrix, self.channels))
        if self.mean is not None:
            object.__setattr__(self, "mean", tuple(float(m) for m in np.atleast_1d(self.mean)))
            if len(self.mean) not in (1, self.channels):
                raise ValueError(f"mean has {len(self.mean)} values for {self.channels} channels")
        object.__setattr__(self, "offset", tuple(float(o) for o in np.atleast_1d(self.offset)))
        if len(self.offset) not in (1, self.channels):
            raise ValueError(f"offset has {len(self.offset)} values for {self.channels} channels")

    @property
    def spectrum_shape(self) -> tuple[int, int, int, int]:
        """Shape of one image's variable: (channels, H, Wf, 2)."""
        return (self.channels, *rfft2d_freqs(self.height, self.width).shape, 2)

    def channel_mean(self) -> np.ndarray:
        """The per-channel mean subtracted in the network's input space."""
        if self.mean is not None:
            return np.broadcast_to(np.asarray(self.mean, np.float32), (self.channels,))
        return np.zeros(self.channels, np.float32)

    def init(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` starting spectra, ``sd * N(0, 1)`` (Lucid's default sd is 0.01)."""
        return self.sd * jax.random.normal(key, (n, *self.spectrum_shape), jnp.float32)

    def colour_space(self, z: jax.Array) -> jax.Array:
        """(n, H, W, C) images before the colour mapping: the scaled spectrum, inverted and cropped."""
        scale = spectrum_scale(self.height, self.width, self.decay_power)
        z = z * live_spectrum_mask(self.height, self.width)
        spectrum = jax.lax.complex(z[..., 0], z[..., 1]) * scale
        wf = spectrum.shape[-1]
        pixels = jnp.fft.irfft2(spectrum, s=(self.height, 2 * (wf - 1)), axes=(-2, -1))
        pixels = pixels[..., : self.height, : self.width] / LUCID_SPECTRUM_DIVISOR
        return jnp.moveaxis(pixels, 1, -1)

    def colours(self) -> np.ndarray:
        """The (C, C) matrix from the decorrelated basis to colours (``colours = M t`` per pixel)."""
        return colour_matrix(self.colour_matrix, self.channels)

    def rgb(self, z: jax.Array) -> jax.Array:
        """(n, H, W, C) colours in [0, 1], channels in RGB order."""
        t = self.colour_space(z)
        if self.decorrelate:
            t = t @ jnp.asarray(self.colours().T)
        return jax.nn.sigmoid(t + jnp.asarray(self.offset, t.dtype))

    def render(self, aux_params: Any, z: jax.Array) -> jax.Array:
        """(n, H, W, C) images in the network's input space; ``aux_params`` is unused."""
        colours = self.rgb(z)
        if self.bgr and self.channels == 3:
            colours = colours[..., ::-1]
        return colours * self.pixel_scale - jnp.asarray(self.channel_mean())


__all__ = ["FourierImage", "live_spectrum_mask", "rfft2d_freqs", "spectrum_scale", "COLOR_CORRELATION_SVD_SQRT",
           "COLOR_CORRELATION_NORMALIZED"]
