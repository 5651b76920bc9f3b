"""Robustness transforms: shape-preserving, keyed, identities at the neutral parameter, differentiable."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz.core import transforms as T

SHAPE = (3, 24, 20, 3)


def images(seed: int = 0, shape=SHAPE) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


RANDOM = {
    "jitter": T.jitter(5),
    "scale": T.random_scale(T.LUCID_SCALES),
    "rotate": T.random_rotate(T.LUCID_ANGLES),
    "standard": T.standard_transforms(),
    "standard_padded": T.standard_transforms(pad_width=3),
}


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_shape_determinism_and_key_dependence(name):
    t = jax.jit(RANDOM[name])
    x = images()
    a, b = t(jax.random.key(1), x), t(jax.random.key(1), x)
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_array_equal(a, b)
    others = [t(jax.random.key(k), x) for k in range(2, 6)]
    assert any(not np.allclose(a, o) for o in others)


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_differentiable(name):
    t = RANDOM[name]
    x = images()
    w = images(seed=9)
    g = jax.grad(lambda v: jnp.sum(w * t(jax.random.key(0), v)))(x)
    assert g.shape == x.shape and np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) > 0


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_values_drawn_apart_from_their_use_give_the_same_images(name):
    # The loop draws every step's values at the start of a run, vmapped over the steps' keys under jit
    # (transforms.draw), and each step applies its row later: each row must give that key's images.
    t, x = RANDOM[name], images()
    assert isinstance(t, T.RandomTransform)
    keys = jax.random.split(jax.random.key(4), 3)
    rows = jax.jit(jax.vmap(lambda k: T.draw(t, k, x.shape[0])))(keys)
    for i, key in enumerate(keys):
        row = jax.tree_util.tree_map(lambda a: a[i], rows)
        np.testing.assert_allclose(T.apply_drawn(t, row, x), t(key, x), rtol=1e-5, atol=1e-5)


def test_a_plain_function_draws_as_it_applies():
    noisy = lambda key, x: x + jax.random.normal(key, x.shape)
    x, key = images(), jax.random.key(1)
    assert T.draw(noisy, key, x.shape[0]) is key
    chain = T.compose(T.jitter(2), noisy)
    np.testing.assert_array_equal(T.apply_drawn(chain, T.draw(chain, key, x.shape[0]), x), chain(key, x))
    assert not np.allclose(chain(key, x), T.jitter(2)(jax.random.split(key)[0], x))


def test_identities():
    x = images()
    key = jax.random.key(3)
    np.testing.assert_array_equal(T.jitter(0)(key, x), x)
    np.testing.assert_array_equal(T.shift(x, jnp.zeros(3, int), jnp.zeros(3, int), 4), x)
    np.testing.assert_allclose(T.random_scale([1.0])(key, x), x, atol=1e-6)
    np.testing.assert_allclose(T.random_rotate([0.0])(key, x), x, atol=1e-6)
    np.testing.assert_array_equal(T.pad(0)(key, x), x)
    np.testing.assert_array_equal(T.compose()(key, x), x)


def test_shift_matches_numpy_reflect_pad_transcription():
    x = np.asarray(images())
    dy, dx, m = np.array([3, -2, 0]), np.array([-4, 1, 4]), 4
    out = np.asarray(T.shift(jnp.asarray(x), dy, dx, m))
    xp = np.pad(x, ((0, 0), (m, m), (m, m), (0, 0)), mode="reflect")
    h, w = x.shape[1:3]
    for n in range(3):
        np.testing.assert_array_equal(out[n], xp[n, m - dy[n]: m - dy[n] + h, m - dx[n]: m - dx[n] + w])
        # Away from the borders a shift moves content: output[i] = input[i - d].
        np.testing.assert_array_equal(out[n, 5:15, 5:15], x[n, 5 - dy[n]: 15 - dy[n], 5 - dx[n]: 15 - dx[n]])


def test_jitter_draws_per_image_within_range():
    x = jnp.broadcast_to(images(shape=(1, 24, 20, 3)), (6, 24, 20, 3))
    out = np.asarray(T.jitter(3)(jax.random.key(0), x))
    assert len({out[n].tobytes() for n in range(6)}) > 1  # images of a batch draw their own shifts
    src = np.asarray(x[0])
    for n in range(6):
        found = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                 if np.array_equal(out[n, 6:18, 6:14], src[6 - dy:18 - dy, 6 - dx:14 - dx])]
        assert found, "every output is an integer shift of at most 3 pixels"


def dot_image(h: int, w: int, r: int, c: int) -> jax.Array:
    x = np.zeros((1, h, w, 1), np.float32)
    x[0, r, c, 0] = 1.0
    return jnp.asarray(x)


def test_rotation_is_about_the_centre_and_counter_clockwise():
    x = dot_image(21, 21, 10, 16)  # 6 pixels right of the centre (10, 10)
    out = np.asarray(T.affine_about_center(x, T.rotation_matrices(jnp.asarray([90.0]))))[0, :, :, 0]
    assert np.unravel_index(out.argmax(), out.shape) == (4, 10)  # now 6 pixels above it
    assert out.max() == pytest.approx(1.0, abs=1e-5)


def test_scale_zooms_about_the_centre_bilinearly():
    x = dot_image(21, 21, 10, 13)  # 3 pixels right of the centre
    out = np.asarray(T.affine_about_center(x, T.scale_matrices(jnp.asarray([2.0]))))[0, :, :, 0]
    # Zoom 2: the dot lands 6 pixels out, spread bilinearly to its neighbours at half weight.
    assert out[10, 16] == pytest.approx(1.0) and out[10, 15] == pytest.approx(0.5)
    assert out[10, 17] == pytest.approx(0.5) and out[10, 13] == 0.0
    ramp = jnp.broadcast_to(jnp.arange(21.0)[None, :, None], (21, 21, 1))[None]
    zoomed = np.asarray(T.affine_about_center(ramp, T.scale_matrices(jnp.asarray([1.25]))))[0, :, :, 0]
    np.testing.assert_allclose(zoomed[:, 2:19], np.broadcast_to(10 + (np.arange(2, 19) - 10) / 1.25, (21, 17)),
                               atol=1e-5)


def test_scale_and_rotate_draw_from_the_given_values():
    x = jnp.broadcast_to(images(shape=(1, 16, 16, 1)), (8, 16, 16, 1))
    out = np.asarray(T.random_scale([0.5, 1.0])(jax.random.key(0), x))
    ident = [np.allclose(out[n], x[0], atol=1e-6) for n in range(8)]
    assert 0 < sum(ident) < 8  # some images drew scale 1, others 0.5


def test_pad_frames_shrunk_content():
    x = images()
    out = np.asarray(T.pad(4, value=-7.0)(jax.random.key(0), x))
    assert out.shape == x.shape
    frame = np.ones(x.shape[1:3], bool)
    frame[4:-4, 4:-4] = False
    assert np.all(out[:, frame, :] == -7.0)
    inner = jax.image.resize(x, (3, 16, 12, 3), "linear")
    np.testing.assert_allclose(out[:, 4:-4, 4:-4], inner, atol=1e-6)
    np.testing.assert_array_equal(out, T.pad(4, value=-7.0)(jax.random.key(5), x))
    with pytest.raises(ValueError):
        T.pad(10)(jax.random.key(0), x)


def test_lucid_constants():
    assert T.LUCID_SCALES[0] == pytest.approx(0.9) and T.LUCID_SCALES[-1] == pytest.approx(1.1)
    assert len(T.LUCID_SCALES) == 11 and len(T.LUCID_ANGLES) == 26 and T.LUCID_ANGLES.count(0.0) == 6


def test_transforms_vmap_over_runs():
    t = T.standard_transforms()
    xs = images(shape=(2, 2, 12, 12, 3))
    keys = jax.random.split(jax.random.key(0), 2)
    out = jax.jit(jax.vmap(t))(keys, xs)
    np.testing.assert_allclose(out[1], t(keys[1], xs[1]), atol=1e-5)


def test_uniform_index_draws_every_option_evenly():
    # Each count is Binomial(170000, 1/17): mean 10000, sd 97; 6 sd either side.
    draws = np.asarray(T.uniform_index(jax.random.key(0), 17, (170_000,)))
    assert draws.dtype == np.int32 and draws.min() == 0 and draws.max() == 16
    assert np.all(np.abs(np.bincount(draws, minlength=17) - 10_000) < 600)


def _ramp(shape) -> jax.Array:
    """An image linear in row and column, per channel: bilinear interpolation reproduces it exactly."""
    n, h, w, c = shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    slopes = np.random.default_rng(0).normal(size=(n, 1, 1, c, 2))
    return jnp.asarray(slopes[..., 0] * rows[None, :, :, None] + slopes[..., 1] * cols[None, :, :, None]
                       + np.arange(c), jnp.float32)


def test_random_affine_draws_the_chains_maps():
    """On a linear image, away from the borders, one resampling of the composed map equals the four steps
    drawn from the same key: the same jitters, scale and angle, each image its own."""
    x = _ramp((6, 64, 64, 3))
    chain = T.compose(T.jitter(8), T.random_scale(T.LUCID_SCALES), T.random_rotate(T.LUCID_ANGLES), T.jitter(4))
    fused = T.random_affine(T.LUCID_SCALES, T.LUCID_ANGLES, shift_before=8, shift_after=4)
    for k in range(4):
        key = jax.random.key(k)
        a, b = np.asarray(fused(key, x)), np.asarray(chain(key, x))
        # The centre 16 x 16: no step of the chain reads past a border there.
        np.testing.assert_allclose(a[:, 24:40, 24:40], b[:, 24:40, 24:40], atol=2e-4)
    assert not np.allclose(fused(jax.random.key(0), x), fused(jax.random.key(1), x))


def test_random_affine_gradient_gathers_and_small_images_still_work():
    x = images(shape=(2, 64, 64, 3))
    t = T.standard_transforms()
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda v: jnp.sum(t(jax.random.key(1), v) ** 2)))(x))
    assert "gather" in jaxpr and "scatter" not in jaxpr
    # 20 x 20 cannot mirror the margin a 1.3x reach with 13-pixel shifts needs: map_coordinates takes it.
    small = images(shape=(2, 20, 20, 1))
    g = jax.grad(lambda v: jnp.sum(t(jax.random.key(2), v) ** 2))(small)
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) > 0
    with pytest.raises(ValueError, match="jitter of 8 pixels"):
        t(jax.random.key(0), images(shape=(1, 8, 8, 1)))
    with pytest.raises(ValueError, match="positive scales"):
        T.random_affine([0.0], [0.0])
