"""Preprocessing: Caffe-space round trips, channel order, the shipped mean image, display transforms."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz.models import preprocessing as pp

STATED_MEANS = (104.0069879317889, 116.66876761696767, 122.6789143406786)


def test_shipped_mean_image():
    mean = pp.mean_image()
    assert mean.shape == (256, 256, 3) and mean.dtype == np.float32
    # The DGN-AM .mat's channel means agree with Caffe's stated ones to ~6e-4 (not bit-exactly).
    np.testing.assert_allclose(mean.astype(np.float64).mean(axis=(0, 1)), STATED_MEANS, atol=1e-3)
    np.testing.assert_allclose(pp.MEAN_BGR, STATED_MEANS, rtol=1e-7)
    np.testing.assert_array_equal(pp.mean_crop(227), mean[14:241, 14:241])
    np.testing.assert_array_equal(pp.mean_crop(256), mean)
    with pytest.raises(ValueError):
        mean[0, 0, 0] = 0.0  # the cached array is shared: read-only


def test_shipped_mean_equals_conversion_of_the_mat(shared_data):
    pytest.importorskip("scipy.io")
    from weights_convert.mean_image import read_mean_mat

    converted = read_mean_mat(str(shared_data("dgn-am", "ilsvrc_2012_mean.mat")))
    np.testing.assert_array_equal(converted, pp.mean_image())


@pytest.mark.parametrize("mean", ["image", "channel", None, np.array([1.0, 2.0, 3.0], np.float32)])
def test_round_trip_uint8(mean):
    rgb = np.random.default_rng(0).integers(0, 256, (2, 227, 227, 3), dtype=np.uint8)
    x = pp.rgb_to_caffe(rgb, mean)
    assert x.dtype == np.float32 and x.shape == rgb.shape
    np.testing.assert_allclose(pp.caffe_to_rgb(x, mean), rgb, atol=1e-4)
    np.testing.assert_array_equal(pp.to_uint8(pp.caffe_to_rgb(x, mean)), rgb)


def test_round_trip_float_unit_range_and_jax_arrays():
    rgb = np.random.default_rng(1).random((64, 64, 3)).astype(np.float32)
    x = pp.rgb_to_caffe(jnp.asarray(rgb), "image", white=1.0)
    assert isinstance(x, jnp.ndarray)
    np.testing.assert_allclose(pp.caffe_to_rgb(x, "image", white=1.0), rgb, atol=1e-5)
    np.testing.assert_allclose(x, pp.rgb_to_caffe(rgb * 255.0, "image"), atol=1e-3)


def test_channel_order_and_mean_values():
    red = np.zeros((227, 227, 3), np.uint8)
    red[..., 0] = 255
    x = pp.rgb_to_caffe(red, "channel")
    np.testing.assert_allclose(x[0, 0], [0 - STATED_MEANS[0], 0 - STATED_MEANS[1], 255 - STATED_MEANS[2]], rtol=1e-6)
    xi = pp.rgb_to_caffe(red, "image")
    np.testing.assert_allclose(xi[..., 2], 255.0 - pp.mean_image()[14:241, 14:241, 2])


def test_mean_image_needs_a_square_image_that_fits():
    with pytest.raises(ValueError, match="channel"):
        pp.rgb_to_caffe(np.zeros((300, 300, 3)), "image")
    with pytest.raises(ValueError):
        pp.rgb_to_caffe(np.zeros((10, 12, 3)), "image")
    with pytest.raises(ValueError, match="RGB"):
        pp.rgb_to_caffe(np.zeros((10, 10, 1)), "channel")
    pp.rgb_to_caffe(np.zeros((300, 200, 3)), "channel")


def test_display_dgn_am():
    x = np.zeros((1, 2, 2, 3), np.float32)
    x[0, 0, 0] = [-120.0, 0.0, 120.0]  # B, G, R
    x[0, 0, 1] = [-500.0, 60.0, 500.0]
    out = pp.display_dgn_am(x)
    np.testing.assert_allclose(out[0, 0, 0], [1.0, 0.5, 0.0])  # R, G, B
    np.testing.assert_allclose(out[0, 0, 1], [1.0, 0.75, 0.0])
    np.testing.assert_allclose(out[0, 1, 1], [0.5, 0.5, 0.5])
    assert pp.to_uint8(out, white=1.0)[0, 0, 0].tolist() == [255, 128, 0]


def test_display_photo_adds_mean_and_clips():
    x = np.full((227, 227, 3), -1000.0, np.float32)
    x[0, 0] = [0.0, 0.0, 1000.0]
    out = pp.display_photo(x)
    assert out.min() == 0.0 and out.max() == 255.0
    np.testing.assert_allclose(out[0, 0], [255.0, pp.mean_crop(227)[0, 0, 1], pp.mean_crop(227)[0, 0, 0]],
                               rtol=1e-6)
