"""jaxviz.models.layers against naive loop transcriptions of Caffe's layer definitions."""

from __future__ import annotations

import numpy as np
import pytest

from jaxviz.models import layers
from tests.helpers import caffe_reference as ref
from tests.helpers.jaxprs import primitive_names
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


# ----- the speed forms: each against the reference form (jax.lax) and Caffe's closed form -------------------

import jax  # noqa: E402
from jax import lax  # noqa: E402

# (H, W, C_in, C_out, k, stride, pad, groups): conv1's shape class (11x11 stride 4, 3 channels), grouped, padded,
# strides that do not divide the kernel or the input, 1x1.
CONV_FORM_CASES = [
    (35, 31, 3, 8, 11, 4, 0, 1),
    (9, 8, 6, 4, 3, 2, 1, 2),
    (9, 8, 3, 5, 5, 1, 2, 1),
    (8, 9, 3, 2, 4, 3, 0, 1),
    (7, 7, 8, 4, 1, 1, 0, 1),
    (13, 13, 6, 6, 3, 1, 1, 3),
]


def _lax_conv(x, k, s, p, g):
    return lax.conv_general_dilated(x, k, (s, s), [(p, p), (p, p)], dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=g)


def _value_and_grads(f, x, kern, ct):
    """f(x, kernel) and the gradients of <f, ct> in x and the kernel, in one compiled program."""
    return jax.jit(lambda v, kk: (f(v, kk), jax.grad(lambda a, b: jnp_sum(f(a, b) * ct), argnums=(0, 1))(v, kk)))(
        x, kern)


@pytest.mark.parametrize("h,w,c_in,c_out,k,s,p,g", CONV_FORM_CASES)
def test_conv2d_forms_match_reference_forward_and_gradient(h, w, c_in, c_out, k, s, p, g):
    x = _rand(2, h, w, c_in, seed=7)
    kern = _rand(k, k, c_in // g, c_out, seed=8)
    ct = _rand(*jax.eval_shape(lambda: _lax_conv(x, kern, s, p, g)).shape, seed=9)
    want, grads_want = _value_and_grads(lambda v, kk: _lax_conv(v, kk, s, p, g), x, kern, ct)
    for form in layers.FORMS["conv"]:
        got, grads = _value_and_grads(
            lambda v, kk: layers.conv2d(v, kk, None, (s, s), (p, p), groups=g, form=form), x, kern, ct)
        assert got.shape == want.shape, form
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=form)
        for a, b in zip(grads, grads_want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=form)


def jnp_sum(v):
    return v.sum()


@pytest.mark.parametrize("form", layers.FORMS["conv"])
def test_conv2d_forms_match_caffe(form):
    x = _rand(2, 19, 17, 3, seed=10)
    w = _rand(4, 3, 7, 7, seed=11)
    b = _rand(4, seed=12)
    got = np.asarray(jax.jit(lambda v: layers.conv2d(v, conv_kernel(w), b, (3, 3), (1, 1), form=form))(x))
    np.testing.assert_allclose(got, ref.nhwc(ref.conv(ref.nchw(x), w, b, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def _lax_deconv(x, k, s, p, g):
    kh = k.shape[0]
    return lax.conv_general_dilated(x, k, (1, 1), [(kh - 1 - p,) * 2] * 2, lhs_dilation=(s, s),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=g)


@pytest.mark.parametrize("c_in,c_out,k,s,p,g", [(4, 6, 4, 2, 1, 1), (8, 3, 4, 2, 1, 1), (6, 4, 4, 2, 1, 2),
                                                (3, 5, 3, 1, 1, 1), (2, 3, 3, 2, 0, 1), (4, 6, 3, 3, 1, 2),
                                                (3, 3, 2, 3, 0, 1)])
def test_deconv2d_forms_match_reference_forward_and_gradient(c_in, c_out, k, s, p, g):
    x = _rand(2, 5, 6, c_in, seed=13)
    kern = _rand(k, k, c_in // g, c_out, seed=14)
    ct = _rand(*jax.eval_shape(lambda: _lax_deconv(x, kern, s, p, g)).shape, seed=15)
    want, grads_want = _value_and_grads(lambda v, kk: _lax_deconv(v, kk, s, p, g), x, kern, ct)
    for form in layers.FORMS["deconv"]:
        got, grads = _value_and_grads(
            lambda v, kk: layers.deconv2d(v, kk, None, (s, s), (p, p), groups=g, form=form), x, kern, ct)
        assert got.shape == want.shape, form
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=form)
        for a, b in zip(grads, grads_want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=form)


@pytest.mark.parametrize("rows", [1, 3, 8, 20])
def test_dense_forms_match_the_matmul_forward_and_gradient(rows):
    x = _rand(rows, 37, seed=20)
    kern = _rand(37, 11, seed=21)
    ct = _rand(rows, 11, seed=22)
    want, grads_want = _value_and_grads(lambda v, kk: v @ kk, x, kern, ct)
    for form in (None, *layers.FORMS["dense"]):
        got, grads = _value_and_grads(lambda v, kk: layers.dense(v, kk, form=form), x, kern, ct)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=str(form))
        for a, b in zip(grads, grads_want):   # the input and the weight gradient
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=str(form))


def test_dense_adds_the_bias_as_caffe_does():
    x, kern, b = _rand(9, 6, seed=23), _rand(6, 4, seed=24), _rand(4, seed=25)
    want = np.asarray(x, np.float64) @ np.asarray(kern, np.float64) + np.asarray(b, np.float64)
    for form in layers.FORMS["dense"]:
        np.testing.assert_allclose(jax.jit(lambda v: layers.dense(v, kern, b, form=form))(x), want,
                                   rtol=1e-5, atol=1e-5, err_msg=form)


def test_unknown_form_is_refused():
    x, k = _rand(1, 5, 5, 2), _rand(3, 3, 2, 2)
    with pytest.raises(ValueError, match="unknown form"):
        layers.conv2d(x, k, None, form="winograd")
    with pytest.raises(ValueError, match="unknown form"):
        layers.deconv2d(x, k, None, (2, 2), form="winograd")
    with pytest.raises(ValueError, match="unknown form"):
        layers.dense(_rand(2, 3), _rand(3, 4), form="winograd")


def test_default_forms_by_shape_on_cpu():
    if jax.default_backend() != "cpu":
        pytest.skip("the shape rules are XLA:CPU's")
    assert layers.conv_form((8, 227, 227, 3), (11, 11, 3, 96), (4, 4)) == layers.CONV1_FORM
    assert layers.conv_form((8, 27, 27, 96), (5, 5, 48, 256), (1, 1), groups=2) == "split"
    assert layers.conv_form((4, 13, 13, 256), (3, 3, 256, 384), (1, 1)) == "im2col"     # 676 output rows
    assert layers.conv_form((8, 13, 13, 256), (3, 3, 256, 384), (1, 1)) == "direct"     # 1352
    assert layers.conv_form((16, 8, 8, 256), (3, 3, 256, 512), (1, 1)) == "im2col"      # 1024
    assert layers.conv_form((8, 32, 32, 128), (3, 3, 128, 128), (1, 1)) == "direct"
    assert layers.deconv_form((8, 128, 128, 32), (4, 4, 32, 3), (2, 2)) == "direct"
    assert layers.deconv_form((8, 64, 64, 64), (4, 4, 64, 32), (2, 2)) == "phases"
    assert layers.dense_form((layers.DENSE_CONV_MIN_ROWS - 1, 4096)) == "dot"
    assert layers.dense_form((layers.DENSE_CONV_MIN_ROWS, 4096)) == "conv"


def test_plain_forms_trace_each_layer_as_one_operation_with_the_same_sums():
    """Under ``plain_forms()`` (a program run once) a grouped convolution, a stride-2 deconvolution of a
    large map, a strided conv1-like convolution and max pooling each trace to one XLA operation, no
    slicing into groups, phases or parts, and give the default forms' values to float rounding."""
    from jaxviz.core.plain_forms import in_plain_forms, plain_forms

    cases = {
        "grouped conv": (lambda x, k: layers.conv2d(x, k, None, (1, 1), (2, 2), groups=2),
                         _rand(2, 9, 9, 8), _rand(5, 5, 4, 6)),
        "conv1-like": (lambda x, k: layers.conv2d(x, k, None, (4, 4)), _rand(2, 35, 35, 3), _rand(11, 11, 3, 8)),
        "stride-2 deconv": (lambda x, k: layers.deconv2d(x, k, None, (2, 2), (1, 1)),
                            _rand(2, 32, 32, 8), _rand(4, 4, 8, 16)),
        "max pool": (lambda x, k: layers.max_pool(x, (3, 3), (2, 2)) + 0 * k.sum(), _rand(2, 13, 13, 4), _rand(1)),
        "dense": (lambda x, k: layers.dense(x, k), _rand(8, 12), _rand(12, 5)),
    }
    assert not in_plain_forms()
    for name, (f, x, k) in cases.items():
        fast = f(x, k)
        with plain_forms():
            assert in_plain_forms()
            plain_ops = primitive_names(f, x, k)
            plain = f(x, k)
        layer_ops = [op for op in plain_ops if op in ("conv_general_dilated", "reduce_window_max", "dot_general")]
        assert len(layer_ops) == 1, (name, plain_ops)
        assert not {"concatenate", "slice", "custom_vjp_call", "custom_vmap_call"} & set(plain_ops), (name, plain_ops)
        np.testing.assert_allclose(plain, fast, rtol=1e-5, atol=1e-4, err_msg=name)
    if jax.default_backend() == "cpu":   # the fast forms do cut these layers up there: the check above can fail
        f, x, k = cases["grouped conv"]
        assert "concatenate" in primitive_names(f, x, k)
        f, x, k = cases["stride-2 deconv"]
        assert len([op for op in primitive_names(f, x, k) if op == "conv_general_dilated"]) > 1


def _caffe_max_pool_grad(x, g, k, s, p):
    """Caffe's MaxPoolingLayer backward, transcribed: each window's first maximum (row-major scan, ``>``)
    takes the window's gradient; padding never wins."""
    n, c, h, w = x.shape
    oh, ow = ref.pooled_size(h, k, s, p), ref.pooled_size(w, k, s, p)
    dx = np.zeros_like(x, dtype=np.float64)
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    hs, ws = i * s - p, j * s - p
                    he, we = min(hs + k, h), min(ws + k, w)
                    hs, ws = max(hs, 0), max(ws, 0)
                    best, arg = -np.inf, None
                    for yy in range(hs, he):
                        for xx in range(ws, we):
                            if x[b, ch, yy, xx] > best:
                                best, arg = x[b, ch, yy, xx], (yy, xx)
                    dx[b, ch, arg[0], arg[1]] += g[b, ch, i, j]
    return dx


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("h,w,k,s,p", POOL_CASES)
def test_max_pool_gradient_matches_xla_and_caffe(h, w, k, s, p, tied):
    x = _rand(2, h, w, 3, seed=h * w + 2)
    if tied:  # few distinct values: most windows hold several maxima, and whole tied windows
        x = np.round(x).astype(np.float32)
        x[0, : h // 2] = 1.0
    y = layers.max_pool(x, (k, k), (s, s), (p, p))
    g = _rand(*y.shape, seed=3)
    padding = tuple(tuple(q) for q in layers._pool_padding((h, w), (k, k), (s, s), (p, p)))
    got = jax.jit(jax.grad(lambda v: jnp_sum(layers.max_pool(v, (k, k), (s, s), (p, p)) * g)))(x)
    want = jax.jit(jax.grad(lambda v: jnp_sum(lax.reduce_window(v, -np.inf, lax.max, (1, k, k, 1), (1, s, s, 1),
                                                                ((0, 0), *padding, (0, 0))) * g)))(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    caffe = ref.nhwc(_caffe_max_pool_grad(ref.nchw(x), ref.nchw(np.asarray(g)), k, s, p))
    np.testing.assert_allclose(got, caffe, rtol=1e-5, atol=1e-5)


def test_max_pool_gradient_on_a_constant_input_goes_to_each_windows_first_element():
    x = np.ones((1, 5, 5, 1), np.float32)
    got = np.asarray(jax.grad(lambda v: layers.max_pool(v, (3, 3), (2, 2)).sum())(x))[0, :, :, 0]
    want = np.zeros((5, 5))
    want[0, 0] = want[0, 2] = want[2, 0] = want[2, 2] = 1.0   # windows start at rows/cols 0 and 2
    np.testing.assert_array_equal(got, want)


def test_max_pool_gradient_under_vmap_and_jit():
    x = _rand(3, 2, 11, 11, 4, seed=5)
    f = jax.jit(jax.vmap(jax.grad(lambda v: (layers.max_pool(v, (3, 3), (2, 2)) ** 2).sum())))
    want = jax.vmap(jax.grad(lambda v: (lax.reduce_window(v, -np.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                                          "VALID") ** 2).sum()))(x)
    np.testing.assert_allclose(f(x), want, rtol=1e-6, atol=1e-6)
