"""Bilinear affine resampling with a gathered adjoint, against map_coordinates and its autodiff gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.ndimage import map_coordinates

from jaxviz.core import resample as R
from jaxviz.core import transforms as T

SHAPE = (4, 23, 19, 3)


def images(seed: int = 0, shape=SHAPE) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def reference(x: jax.Array, matrices: jax.Array) -> jax.Array:
    """The same resampling written with scipy's map_coordinates (order 1, mirror), channel by channel."""
    n, h, w, c = x.shape
    centre = jnp.asarray([(h - 1) / 2.0, (w - 1) / 2.0])
    grid = jnp.stack(jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                                  indexing="ij")) - centre[:, None, None]

    def one(image, m):
        src = jnp.einsum("ij,jhw->ihw", m, grid) + centre[:, None, None]
        return jnp.stack([map_coordinates(image[..., k], [src[0], src[1]], order=1, mode="mirror")
                          for k in range(c)], -1)
    return jax.vmap(one)(x, matrices)


# Rotations and zooms of the chain's extremes, and one matrix with shear, all within one reach.
MATRICES = jnp.concatenate([T.rotation_matrices(jnp.asarray([-10.0, 7.5])),
                            T.scale_matrices(jnp.asarray([0.9, 1.1])) @ T.rotation_matrices(jnp.asarray([3.0, 0.0]))])
SHEAR = jnp.asarray([[[1.0, 0.15], [-0.05, 0.95]]] * 4)


@pytest.mark.parametrize("matrices", [MATRICES, SHEAR], ids=["rotate_scale", "shear"])
def test_values_equal_map_coordinates(matrices):
    x = images()
    out = R.affine_resample(x, matrices, R.reach_of(matrices))
    np.testing.assert_allclose(out, reference(x, matrices), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("matrices", [MATRICES, SHEAR], ids=["rotate_scale", "shear"])
def test_gradient_equals_autodiff_of_map_coordinates(matrices):
    x, cotangent = images(1), images(2)
    ours = jax.vjp(lambda v: R.affine_resample(v, matrices, R.reach_of(matrices)), x)[1](cotangent)[0]
    theirs = jax.vjp(lambda v: reference(v, matrices), x)[1](cotangent)[0]
    np.testing.assert_allclose(ours, theirs, atol=5e-5, rtol=1e-5)


def test_adjoint_identity_and_jit():
    """<A x, y> = <x, A^T y>: the gathered adjoint is the transpose of the forward map, compiled too."""
    x, y = images(3), images(4)
    reach = R.reach_of(MATRICES)
    forward = jax.jit(lambda v: R.affine_resample(v, MATRICES, reach))
    adjoint = jax.jit(lambda g: jax.vjp(forward, x)[1](g)[0])
    lhs = float(jnp.vdot(forward(x), y))
    rhs = float(jnp.vdot(x, adjoint(y)))
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_identity_matrix_reproduces_the_image_and_passes_the_gradient():
    x = images(5)
    eye = jnp.broadcast_to(jnp.eye(2), (SHAPE[0], 2, 2))
    reach = R.reach_of(eye)
    np.testing.assert_allclose(R.affine_resample(x, eye, reach), x, atol=1e-6)
    grad = jax.grad(lambda v: jnp.sum(R.affine_resample(v, eye, reach) * x))(x)
    np.testing.assert_allclose(grad, x, atol=1e-6)


def test_vmapped_over_runs_equals_each_run():
    xs = images(6, (3, 2, 15, 15, 1))
    ms = MATRICES[:2][None].repeat(3, 0) * jnp.asarray([1.0, 0.98, 1.02])[:, None, None, None]
    reach = R.reach_of(np.asarray(ms))
    out = jax.vmap(lambda x, m: R.affine_resample(x, m, reach))(xs, ms)
    grads = jax.vmap(jax.grad(lambda x, m: jnp.sum(R.affine_resample(x, m, reach) ** 2)))(xs, ms)
    for i in range(3):
        np.testing.assert_allclose(out[i], reference(xs[i], ms[i]), atol=2e-5)
        np.testing.assert_allclose(grads[i], jax.grad(lambda v: jnp.sum(reference(v, ms[i]) ** 2))(xs[i]),
                                   atol=1e-4)


def test_reach_sets_the_margin_and_the_window():
    reach = R.reach_of(np.asarray(T.rotation_matrices(jnp.asarray([10.0]))))
    assert reach.forward == pytest.approx(np.cos(np.pi / 18) + np.sin(np.pi / 18), rel=1e-5)
    assert R._window(reach) == 3  # a reader window of 2 x 1.16 pixels holds at most 3 integers per axis
    assert R._margin(227, 227, reach) == 20  # the corners of a 227 image turned by 10 degrees fall 18 px out
    with pytest.raises(ValueError, match="border of"):
        R.affine_resample(images(shape=(1, 8, 8, 1)), jnp.eye(2)[None] * 4.0, R.reach_of(np.eye(2)[None] * 4.0))


def test_random_transforms_use_it_and_keep_far_zooms():
    """The chain's resamplings go through the gathered adjoint; a zoom too far for its mirrored border on a
    small image still works, through map_coordinates."""
    x = images(7, (2, 16, 16, 1))
    far = T.random_scale([0.25])(jax.random.key(0), x)
    np.testing.assert_allclose(far, reference(x, T.scale_matrices(jnp.asarray([0.25, 0.25]))), atol=2e-5)
    rotate = T.random_rotate(T.LUCID_ANGLES)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda v: jnp.sum(rotate(jax.random.key(1), v) ** 2)))(x))
    assert "gather" in jaxpr and "scatter" not in jaxpr
    old = jax.make_jaxpr(jax.grad(lambda v: jnp.sum(T.affine_about_center(v, MATRICES[:2]) ** 2)))(x)
    assert "scatter" in str(old)  # what the check would catch


def reference_shifted(x: jax.Array, matrices: jax.Array, offsets: jax.Array) -> jax.Array:
    """``reference`` with a translation: output p reads c + M (p - c) + t."""
    n, h, w, c = x.shape
    centre = jnp.asarray([(h - 1) / 2.0, (w - 1) / 2.0])
    grid = jnp.stack(jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                                  indexing="ij")) - centre[:, None, None]

    def one(image, m, t):
        src = jnp.einsum("ij,jhw->ihw", m, grid) + (centre + t)[:, None, None]
        return jnp.stack([map_coordinates(image[..., k], [src[0], src[1]], order=1, mode="mirror")
                          for k in range(c)], -1)
    return jax.vmap(one)(x, matrices, offsets)


# Whole and fractional shifts, up to 6.5 pixels: past the border of a 23 x 19 image at its edges.
OFFSETS = jnp.asarray([[6.5, -3.0], [-2.25, 4.0], [0.0, 0.0], [-6.5, -6.5]])


def test_translation_values_and_gradient_equal_map_coordinates():
    x, cotangent = images(8), images(9)
    reach = R.reach_of(MATRICES, shift=6.5)
    assert R._margin(23, 19, reach) == R._margin(23, 19, R.reach_of(MATRICES)) + 7
    ours = lambda v: R.affine_resample(v, MATRICES, reach, OFFSETS)
    np.testing.assert_allclose(ours(x), reference_shifted(x, MATRICES, OFFSETS), atol=2e-5, rtol=1e-5)
    grad = jax.vjp(ours, x)[1](cotangent)[0]
    theirs = jax.vjp(lambda v: reference_shifted(v, MATRICES, OFFSETS), x)[1](cotangent)[0]
    np.testing.assert_allclose(grad, theirs, atol=5e-5, rtol=1e-5)
