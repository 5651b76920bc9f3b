"""jaxviz.models.layers against naive loop transcriptions of Caffe's layer definitions."""

from __future__ import annotations

import numpy as np
import pytest

from jaxviz.models import layers
from tests.helpers import caffe_reference as ref
from weights_convert.layouts import conv_kernel, deconv_kernel

RTOL, ATOL = 1e-5, 1e-5


def _rand(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# (H, W, kernel, stride, pad): exact divisions, sizes where ceil rounding adds a window, padding, and the
# pad case where Caffe drops a last window that would start inside the padding (5, 2, 2, 1).
POOL_CASES = [
    (13, 13, 3, 2, 0),
    (8, 8, 3, 2, 0),
    (9, 6, 3, 2, 0),
    (10, 11, 3, 3, 0),
    (7, 7, 3, 2, 1),
    (6, 9, 3, 2, 1),
    (5, 5, 2, 2, 1),
    (4, 4, 5, 1, 2),
]


@pytest.mark.parametrize("h,w,k,s,p", POOL_CASES)
def test_max_pool_matches_caffe(h, w, k, s, p):
    x = _rand(2, h, w, 3, seed=h * w)
    got = np.asarray(layers.max_pool(x, (k, k), (s, s), (p, p)))
    want = ref.nhwc(ref.max_pool(ref.nchw(x), k, s, p))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("h,w,k,s,p", POOL_CASES)
def test_ave_pool_matches_caffe(h, w, k, s, p):
    x = _rand(2, h, w, 3, seed=h * w + 1)
    got = np.asarray(layers.ave_pool(x, (k, k), (s, s), (p, p)))
    want = ref.nhwc(ref.ave_pool(ref.nchw(x), k, s, p))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_pool_ceil_rounding_adds_a_window():
    # 8 -> floor rounding would give 3; Caffe gives 4, the last window covering columns 6..7 only.
    assert layers.caffe_pool_output_size(8, 3, 2, 0) == 4
    assert layers.caffe_pool_output_size(227, 3, 2, 0) == 113
    assert layers.caffe_pool_output_size(55, 3, 2, 0) == 27
    assert layers.caffe_pool_output_size(5, 2, 2, 1) == 3  # ceil gives 4; the 4th would start in padding


@pytest.mark.parametrize("size,alpha,beta,k", [(5, 1e-4, 0.75, 1.0), (3, 0.5, 0.75, 2.0), (5, 2e-2, 0.6, 1.0)])
def test_lrn_across_channels_matches_caffe(size, alpha, beta, k):
    x = _rand(2, 4, 5, 7, seed=size, scale=20.0)
    got = np.asarray(layers.lrn_across_channels(x, size, alpha, beta, k))
    want = ref.nhwc(ref.lrn_across(ref.nchw(x), size, alpha, beta, k))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("size,alpha,beta", [(3, 1.0, 0.75), (5, 0.3, 0.75)])
def test_lrn_within_channel_matches_caffe(size, alpha, beta):
    x = _rand(2, 6, 7, 3, seed=size, scale=2.0)
    got = np.asarray(layers.lrn_within_channel(x, size, alpha, beta))
    want = ref.nhwc(ref.lrn_within(ref.nchw(x), size, alpha, beta))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("c_in,c_out,k,s,p,g", [(6, 4, 3, 2, 1, 2), (3, 5, 5, 1, 2, 1), (4, 6, 3, 1, 0, 2),
                                                (3, 2, 4, 3, 0, 1)])
def test_conv2d_matches_caffe(c_in, c_out, k, s, p, g):
    x = _rand(2, 9, 8, c_in, seed=1)
    w = _rand(c_out, c_in // g, k, k, seed=2)
    b = _rand(c_out, seed=3)
    got = np.asarray(layers.conv2d(x, conv_kernel(w), b, (s, s), (p, p), groups=g))
    want = ref.nhwc(ref.conv(ref.nchw(x), w, b, s, p, g))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("c_in,c_out,k,s,p,g", [(4, 6, 4, 2, 1, 2), (3, 5, 3, 1, 1, 1), (2, 3, 3, 2, 0, 1),
                                                (6, 4, 4, 2, 1, 2), (3, 3, 5, 3, 2, 3)])
def test_deconv2d_matches_caffe_scatter_add(c_in, c_out, k, s, p, g):
    x = _rand(2, 5, 4, c_in, seed=4)
    w = _rand(c_in, c_out // g, k, k, seed=5)  # Caffe's deconvolution layout [in, out/g, kh, kw]
    b = _rand(c_out, seed=6)
    got = np.asarray(layers.deconv2d(x, deconv_kernel(w, g), b, (s, s), (p, p), groups=g))
    want = ref.nhwc(ref.deconv(ref.nchw(x), w, b, s, p, g))
    assert got.shape == want.shape == (2, s * 4 + k - 2 * p, s * 3 + k - 2 * p, c_out)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_leaky_relu():
    x = np.array([-2.0, -0.5, 0.0, 1.5], np.float32)
    np.testing.assert_allclose(layers.leaky_relu(x), [0, 0, 0, 1.5])
    np.testing.assert_allclose(layers.leaky_relu(x, 0.3), [-0.6, -0.15, 0, 1.5], rtol=1e-6)
