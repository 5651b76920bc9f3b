"""Fourier / colour-decorrelated image parameterization against a numpy transcription of Lucid."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz.models.preprocessing import MEAN_BGR
from jaxviz.core.fourier import (COLOR_CORRELATION_NORMALIZED, COLOR_CORRELATION_SVD_SQRT, FourierImage,
                                 live_spectrum_mask, rfft2d_freqs)
from jaxviz.recipes import fourier_image_for


def caffe_fourier(height: int, width: int, **kwargs) -> FourierImage:
    """A FourierImage in real CaffeNet space (no card: BGR, 0-255, the ImageNet channel means)."""
    return fourier_image_for(height, width, None, **{"offset": 0.0, **kwargs})  # Lucid starts at mid-grey


def lucid_reference(z: np.ndarray, h: int, w: int, decay_power: float, decorrelate: bool) -> np.ndarray:
    """Lucid's fft_image + to_valid_rgb (lucid/optvis/param/spatial.py, color.py) in numpy, RGB in [0, 1]."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 2] if w % 2 == 1 else np.fft.fftfreq(w)[: w // 2 + 1]
    freqs = np.sqrt(fx * fx + fy * fy)
    spectrum = z[..., 0] + 1j * z[..., 1]                    # (n, ch, h, wf)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** decay_power * np.sqrt(w * h)
    image = np.fft.irfft2(scale * spectrum, s=(h, 2 * (freqs.shape[1] - 1)))  # tf.signal.irfft2d's length
    image = np.transpose(image, (0, 2, 3, 1))[:, :h, :w] / 4.0
    if decorrelate:
        c = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
        c = c / np.max(np.linalg.norm(c, axis=0))
        image = (image.reshape(-1, 3) @ c.T).reshape(image.shape)
    return 1 / (1 + np.exp(-image))


@pytest.mark.parametrize("h,w", [(16, 16), (15, 12), (12, 15), (13, 9)])
@pytest.mark.parametrize("decay_power", [1.0, 1.5])
def test_render_matches_lucid_transcription(h, w, decay_power):
    p = caffe_fourier(h, w, decay_power=decay_power, sd=0.5)
    z = p.init(jax.random.key(0), 2)
    rgb = lucid_reference(np.asarray(z, np.float64), h, w, decay_power, True)
    np.testing.assert_allclose(p.rgb(z), rgb, atol=2e-5)
    caffe = rgb[..., ::-1] * 255.0 - MEAN_BGR
    out = p.render(None, z)
    assert out.shape == (2, h, w, 3) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, caffe, atol=5e-3)


def test_spectrum_layout_follows_lucid():
    assert rfft2d_freqs(10, 12).shape == (10, 7) and rfft2d_freqs(10, 11).shape == (10, 7)
    assert rfft2d_freqs(4, 4)[0, 0] == 0.0 and rfft2d_freqs(4, 4)[2, 2] == pytest.approx(np.sqrt(0.5))


@pytest.mark.parametrize("h,w", [(6, 8), (5, 7), (4, 5)])
def test_masked_spectrum_variables_are_exactly_those_the_inverse_fft_ignores(h, w):
    """Brute force: a variable is masked iff changing it alone leaves numpy's irfft2 image unchanged; the
    masked ones get an exactly zero gradient (rounding noise there would feed Adam a random walk)."""
    wf = rfft2d_freqs(h, w).shape[1]
    z = np.random.default_rng(0).normal(size=(h, wf, 2))
    def image(v):
        return np.fft.irfft2(v[..., 0] + 1j * v[..., 1], s=(h, 2 * (wf - 1)))
    moves = np.zeros((h, wf, 2), bool)
    for index in np.ndindex(*z.shape):
        nudged = z.copy()
        nudged[index] += 1.0
        moves[index] = np.abs(image(nudged) - image(z)).max() > 1e-9
    np.testing.assert_array_equal(live_spectrum_mask(h, w) == 1.0, moves)
    p = caffe_fourier(h, w, sd=0.5)
    grad = jax.grad(lambda v: jnp.sum(p.render(None, v) ** 3))(p.init(jax.random.key(1), 2))
    assert np.all(np.asarray(grad)[:, :, ~moves] == 0.0) and np.all(np.abs(grad)[:, :, moves] > 0)


def test_colour_matrix_constants():
    np.testing.assert_allclose(COLOR_CORRELATION_SVD_SQRT[1], [0.27, 0.0, -0.05])
    assert np.max(np.linalg.norm(COLOR_CORRELATION_NORMALIZED, axis=0)) == pytest.approx(1.0)


def test_render_stays_in_the_caffe_box():
    p = caffe_fourier(20, 18, sd=5.0)  # a large spectrum saturates the sigmoid
    out = np.asarray(p.render(None, p.init(jax.random.key(1), 1)))
    assert np.all(out >= -MEAN_BGR - 1e-3) and np.all(out <= 255.0 - MEAN_BGR + 1e-3)
    assert out.min() < -MEAN_BGR.min() + 50 and out.max() > 255 - MEAN_BGR.max() - 50  # reaches both ends
    start = np.asarray(caffe_fourier(20, 18).render(None, caffe_fourier(20, 18).init(jax.random.key(1), 1)))
    np.testing.assert_allclose(start.mean(axis=(0, 1, 2)), 127.5 - MEAN_BGR, atol=3.0)  # starts near grey


def test_init_deterministic_per_key():
    p = caffe_fourier(10, 11)
    a, b, c = p.init(jax.random.key(4), 2), p.init(jax.random.key(4), 2), p.init(jax.random.key(5), 2)
    assert a.shape == (2, *p.spectrum_shape) == (2, 3, 10, 7, 2) and a.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert float(np.std(np.asarray(a))) == pytest.approx(0.01, rel=0.1)  # Lucid's default sd


def test_differentiable():
    p = caffe_fourier(12, 12, sd=0.2)
    z = p.init(jax.random.key(0), 2)
    rng = np.random.default_rng(1)
    w = jnp.asarray(rng.normal(size=(2, 12, 12, 3)), jnp.float32)
    g = jax.jit(jax.grad(lambda v: jnp.sum(w * p.render(None, v))))(z)
    assert g.shape == z.shape and np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).max()) > 0
    with jax.enable_x64(True):
        z64 = jnp.asarray(z, jnp.float64)
        f = jax.jit(lambda v: jnp.sum(w * p.rgb(v)))
        d = jnp.asarray(rng.normal(size=z.shape), jnp.float64)
        eps = 1e-4
        fd = (f(z64 + eps * d) - f(z64 - eps * d)) / (2 * eps)
        assert float(jnp.vdot(jax.grad(f)(z64), d)) == pytest.approx(float(fd), rel=1e-3)


def radial_power(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    spec = np.abs(np.fft.fft2(images - images.mean(axis=(1, 2), keepdims=True), axes=(1, 2))) ** 2
    fy, fx = np.fft.fftfreq(images.shape[1])[:, None], np.fft.fftfreq(images.shape[2])[None, :]
    return np.sqrt(fx ** 2 + fy ** 2), spec.mean(axis=(0, 3))


@pytest.mark.parametrize("decay_power,low_over_high", [(1.0, 8.0), (0.0, None)])
def test_low_frequencies_dominate_random_init(decay_power, low_over_high):
    p = caffe_fourier(32, 32, decay_power=decay_power)
    freqs, power = radial_power(np.asarray(p.colour_space(p.init(jax.random.key(0), 8))))
    low, high = power[(freqs > 0) & (freqs < 0.1)].mean(), power[freqs > 0.3].mean()
    if low_over_high is None:
        assert 0.5 < low / high < 2.0  # no decay: a flat (white) spectrum
    else:
        assert low / high > low_over_high


def test_one_channel_network():
    p = fourier_image_for(28, 28, {"channel_order": "gray", "mean": [33.3], "pixel_scale": 255.0}, offset=0.0)
    assert p.channels == 1 and p.mean == (33.3,)
    z = p.init(jax.random.key(0), 2)
    assert z.shape == (2, 1, 28, 15, 2)
    out = np.asarray(p.render(None, z))
    assert out.shape == (2, 28, 28, 1)
    np.testing.assert_allclose(out, lucid_reference(np.asarray(z, np.float64), 28, 28, 1.0, False) * 255 - 33.3,
                               atol=5e-3)
    assert np.all(out >= -33.3) and np.all(out <= 255 - 33.3)


def test_mean_defaults_and_validation():
    assert np.array_equal(FourierImage(8, 8).channel_mean(), [0.0, 0.0, 0.0])  # the core knows no dataset
    assert np.array_equal(caffe_fourier(8, 8).channel_mean(), MEAN_BGR)
    assert np.array_equal(FourierImage(8, 8, channels=1).channel_mean(), [0.0])
    assert np.array_equal(fourier_image_for(8, 8, {"channel_order": "BGR", "mean": "image"}).channel_mean(),
                          MEAN_BGR)
    with pytest.raises(ValueError):
        FourierImage(8, 8, mean=(1.0, 2.0))
    hash(FourierImage(8, 8, mean=[1.0, 2.0, 3.0]))  # frozen and hashable: usable as a static jit argument


def test_image_starts_at_the_cards_mean_colour():
    """Without an offset a Fourier image starts mid-grey (Lucid); fitted to a card, at the data's mean."""
    gray = fourier_image_for(28, 28, {"channel_order": "gray", "mean": [33.0], "pixel_scale": 255.0}, sd=0.0)
    start = np.asarray(gray.render(None, gray.init(jax.random.key(0), 1)))
    np.testing.assert_allclose(start, 0.0, atol=1e-3)  # network space: mean subtracted, so 0 is the mean
    bgr = fourier_image_for(8, 8, None, sd=0.0)
    np.testing.assert_allclose(np.asarray(bgr.render(None, bgr.init(jax.random.key(0), 1))), 0.0, atol=1e-3)
    grey = FourierImage(8, 8, channels=1, sd=0.0)
    np.testing.assert_allclose(np.asarray(grey.render(None, grey.init(jax.random.key(0), 1))), 127.5, atol=1e-3)
