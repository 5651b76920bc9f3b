"""Priors: penalties against closed forms and finite differences, operators against numpy transcriptions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from jaxviz.core import operators, penalties
from jaxviz.models import shipped
from jaxviz.core.objectives import unit
from jaxviz.core.operators import OperatorContext


def ctx(step: int = 0, grad=None, seed: int = 0) -> OperatorContext:
    return OperatorContext(jnp.asarray(step, jnp.int32), jax.random.key(seed), grad)


def rng_images(shape=(2, 6, 7, 3), seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


# ----- penalties: closed forms ------------------------------------------------------------------------

def test_l2_and_code_l2_are_sums_of_squares():
    x = rng_images()
    code = rng_images((3, 11))
    assert float(penalties.l2()({"image": x})) == pytest.approx(float(np.sum(x ** 2)), rel=1e-6)
    assert float(penalties.code_l2()({"code": code})) == pytest.approx(float(np.sum(code ** 2)), rel=1e-6)
    assert penalties.code_l2().taps == frozenset({"code"}) and penalties.l2().network_taps == ()


def test_alpha_norm_of_constant():
    x = np.full((2, 4, 5, 3), -1.5, np.float32)
    assert float(penalties.alpha_norm(6.0)({"image": x})) == pytest.approx(x.size * 1.5 ** 6, rel=1e-6)
    assert float(penalties.alpha_norm(1.0)({"image": x})) == pytest.approx(x.size * 1.5, rel=1e-6)
    with pytest.raises(ValueError):
        penalties.alpha_norm(0.5)


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
def test_tv_of_ramp(beta):
    n, h, w, c = 2, 5, 7, 3
    a, b = 2.0, -3.0  # row and column slopes; channels offset so they are not identical
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    x = np.broadcast_to((a * rows + b * cols)[None, :, :, None] + np.arange(c), (n, h, w, c)).astype(np.float32)
    interior = n * (h - 1) * (w - 1)
    per_channel = interior * c * (a * a + b * b) ** (beta / 2)
    joint = interior * (c * (a * a + b * b)) ** (beta / 2)
    assert float(penalties.tv(beta)({"image": x})) == pytest.approx(per_channel, rel=1e-5)
    assert float(penalties.tv(beta, joint_channels=True)({"image": x})) == pytest.approx(joint, rel=1e-5)


def test_tv_counts_only_the_interior():
    # A step in the last row/column alone has no pixel with both differences defined... except its
    # neighbours: a jump between columns W-2 and W-1 is seen by the pixels of column W-2, rows 0..H-2.
    x = np.zeros((1, 4, 5, 1), np.float32)
    x[0, :, -1, 0] = 1.0
    assert float(penalties.tv(2.0)({"image": x})) == pytest.approx(3.0)
    x = np.zeros((1, 4, 5, 1), np.float32)
    x[0, -1, -1, 0] = 1.0  # only the corner: neither difference of any interior pixel reaches it
    assert float(penalties.tv(2.0)({"image": x})) == 0.0


def test_tv_is_flat_zero_with_finite_gradient_for_small_beta():
    x = jnp.zeros((1, 4, 4, 3))
    for beta in (1.0, 0.5):
        pen = penalties.tv(beta)
        assert float(pen({"image": x})) == pytest.approx(9 * 3 * 1e-8 ** (beta / 2), rel=1e-5)
        g = jax.grad(lambda v: pen({"image": v}))(x)
        assert np.all(np.isfinite(np.asarray(g)))


def test_penalties_compose_with_objectives():
    obj = unit("fc8", 3) - 0.5 * penalties.tv(1.0) - 1e-3 * penalties.l2()
    assert obj.network_taps == ("fc8",) and {"image"} <= obj.taps and obj.unit_layer == "fc8"
    x = rng_images()
    acts = {"fc8": jnp.arange(20.0).reshape(2, 10), "image": x}
    expected = 3 + 13 - 0.5 * float(penalties.tv(1.0)(acts)) - 1e-3 * float(np.sum(x ** 2))
    assert float(obj(acts)) == pytest.approx(expected, rel=1e-5)


# ----- penalties: gradients vs central differences ----------------------------------------------------

PENALTIES = {
    "l2": (penalties.l2(), "image"),
    "code_l2": (penalties.code_l2(), "code"),
    "alpha6": (penalties.alpha_norm(6.0), "image"),
    "alpha1.5": (penalties.alpha_norm(1.5), "image"),
    "tv2": (penalties.tv(2.0), "image"),
    "tv1": (penalties.tv(1.0), "image"),
    "tv1.5_joint": (penalties.tv(1.5, joint_channels=True), "image"),
    "tv3": (penalties.tv(3.0), "image"),
}


@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_penalty_gradient_matches_central_differences(name):
    pen, tap = PENALTIES[name]
    shape = (3, 9) if tap == "code" else (2, 4, 5, 3)
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float64)
        f = lambda v: pen({tap: v})
        grad = np.asarray(jax.grad(f)(x))
        h = 1e-6
        eye = jnp.eye(x.size, dtype=jnp.float64).reshape(x.size, *shape)
        fd = (jax.vmap(f)(x[None] + h * eye) - jax.vmap(f)(x[None] - h * eye)) / (2 * h)
        np.testing.assert_allclose(grad.ravel(), np.asarray(fd), rtol=1e-6, atol=1e-6)


# ----- operators --------------------------------------------------------------------------------------

def test_decay():
    z = rng_images()
    np.testing.assert_allclose(operators.decay(0.01)(jnp.asarray(z), ctx()), 0.99 * z, rtol=1e-6)
    np.testing.assert_array_equal(operators.decay(0.0)(jnp.asarray(z), ctx()), z)


def test_blur_keeps_constants():
    x = jnp.full((2, 9, 11, 3), 7.25)
    np.testing.assert_allclose(operators.gaussian_blur(1.5)(x, ctx()), x, rtol=1e-6)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_blur_of_delta_is_normalized_gaussian(sigma):
    size = 41
    x = np.zeros((1, size, size, 1), np.float32)
    x[0, size // 2, size // 2, 0] = 1.0
    k = np.asarray(operators.blur(jnp.asarray(x), sigma))[0, :, :, 0]
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(k, k[::-1, :], atol=1e-7)
    np.testing.assert_allclose(k, k[:, ::-1], atol=1e-7)
    np.testing.assert_allclose(k, k.T, atol=1e-7)
    offsets = np.arange(size) - size // 2
    std_rows = np.sqrt(np.sum(k.sum(axis=1) * offsets ** 2))
    assert std_rows == pytest.approx(sigma, rel=0.02)
    assert k.argmax() == (size // 2) * size + size // 2


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_blur_matches_scipy_gaussian_filter(sigma):
    # Yosinski et al.'s code blurs each channel with scipy.ndimage.gaussian_filter (reflected borders).
    x = rng_images((2, 8, 10, 3))
    ours = np.asarray(operators.blur(jnp.asarray(x), sigma))
    ref = np.stack([np.stack([scipy.ndimage.gaussian_filter(x[n, :, :, c], sigma) for c in range(3)], -1)
                    for n in range(2)])
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_blur_is_linear_its_jvp_is_itself():
    op = operators.gaussian_blur(1.0)
    x, v = jnp.asarray(rng_images(seed=2)), jnp.asarray(rng_images(seed=3))
    out, tangent = jax.jvp(lambda z: op(z, ctx()), (x,), (v,))
    np.testing.assert_allclose(tangent, op(v, ctx()), atol=1e-5)
    np.testing.assert_allclose(out, op(x, ctx()), atol=1e-6)


def test_blur_sigma_zero_and_every_zero_are_identity():
    x = jnp.asarray(rng_images())
    np.testing.assert_array_equal(operators.gaussian_blur(0.0)(x, ctx()), x)
    np.testing.assert_array_equal(operators.gaussian_blur(1.0, every=0)(x, ctx()), x)


def test_blur_every_schedule_with_traced_step():
    op = jax.jit(operators.gaussian_blur(1.0, every=3))
    x = jnp.asarray(rng_images())
    blurred = operators.blur(x, 1.0)
    for step in range(8):
        out = op(x, ctx(step))
        expected = blurred if step % 3 == 0 else x
        np.testing.assert_allclose(out, expected, atol=1e-6, err_msg=f"step {step}")


def test_operators_run_inside_scan_and_vmap():
    op = operators.chain(operators.decay(1e-4), operators.gaussian_blur(1.0, every=4),
                      operators.clip_norm_percentile(20), operators.clip_value(-100, 100))

    def loop(z):
        def body(z, i):
            return op(z, OperatorContext(i, jax.random.key(0), z)), None
        return jax.lax.scan(body, z, jnp.arange(5, dtype=jnp.int32))[0]

    zs = jnp.asarray(rng_images((3, 2, 6, 7, 3), scale=200.0))
    out = jax.jit(jax.vmap(loop))(zs)
    assert out.shape == zs.shape and np.all(np.isfinite(np.asarray(out)))
    np.testing.assert_allclose(out[1], loop(zs[1]), atol=1e-4)


def test_clip_value_scalar_and_per_channel():
    z = rng_images(scale=100.0)
    np.testing.assert_array_equal(operators.clip_value(-10, 20)(jnp.asarray(z), ctx()), np.clip(z, -10, 20))
    lo, hi = np.array([-104.0, -117.0, -123.0]), np.array([151.0, 138.0, 132.0])
    out = operators.clip_value(lo, hi)(jnp.asarray(z), ctx())
    np.testing.assert_array_equal(out, np.clip(z, lo, hi).astype(np.float32))
    np.testing.assert_array_equal(operators.clip_value(high=0.0)(jnp.asarray(z), ctx()), np.minimum(z, 0))


def test_clip_code_per_unit_bounds():
    bounds = shipped.dgn_am_fc6_bounds()
    assert bounds.shape == (4096,) and bounds.dtype == np.float32
    assert np.all(bounds == np.round(bounds)) and 3 <= bounds.min() and bounds.max() <= 17
    assert bounds.mean() == pytest.approx(11.85, abs=0.01)
    code = rng_images((2, 4096), scale=15.0)
    out = operators.clip_code(0.0, bounds)(jnp.asarray(code), ctx())
    np.testing.assert_array_equal(out, np.clip(code, 0.0, bounds[None]))
    with pytest.raises(ValueError, match="4096"):
        operators.clip_code(0.0, bounds)(jnp.zeros((2, 10)), ctx())


def np_zero_below_percentile(z: np.ndarray, score: np.ndarray, pct: float) -> np.ndarray:
    # Transcription of Yosinski et al.'s numpy loop, image by image.
    out = z.copy()
    for n in range(z.shape[0]):
        smalls = score[n] < np.percentile(score[n], pct)
        out[n][smalls] = 0
    return out


@pytest.mark.parametrize("pct", [1, 20, 50, 90])
def test_clip_norm_percentile(pct):
    z = rng_images((3, 10, 10, 3), seed=pct)
    out = np.asarray(operators.clip_norm_percentile(pct)(jnp.asarray(z), ctx()))
    np.testing.assert_array_equal(out, np_zero_below_percentile(z, np.linalg.norm(z, axis=-1), pct))
    # 100 pixels: numpy's linear percentile puts exactly pct of them strictly below (per image).
    zeroed = np.all(out == 0, axis=-1).reshape(3, -1).sum(axis=1)
    np.testing.assert_array_equal(zeroed, pct)


@pytest.mark.parametrize("pct", [10, 50, 90])
def test_clip_contribution_percentile(pct):
    z, g = rng_images((2, 10, 10, 3), seed=7), rng_images((2, 10, 10, 3), seed=8)
    out = np.asarray(operators.clip_contribution_percentile(pct)(jnp.asarray(z), ctx(grad=jnp.asarray(g))))
    np.testing.assert_array_equal(out, np_zero_below_percentile(z, np.abs(np.sum(z * g, axis=-1)), pct))
    np.testing.assert_array_equal(np.all(out == 0, axis=-1).reshape(2, -1).sum(axis=1), pct)


def test_percentile_zero_is_identity():
    z = jnp.asarray(rng_images())
    np.testing.assert_array_equal(operators.clip_norm_percentile(0)(z, ctx()), z)
    np.testing.assert_array_equal(operators.clip_contribution_percentile(0)(z, ctx(grad=z)), z)
