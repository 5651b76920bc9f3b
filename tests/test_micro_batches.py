"""A layer over parts of its batch (models.micro_batches) gives the layer's own values and gradients: on a
plain batch, under vmap (where the parts are cut), for the input and for the weights, shared or per run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz.models import layers
from jaxviz.models.micro_batches import batch_parts, micro_batched

RTOL, ATOL = 1e-5, 1e-4


def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (2, 2), [(1, 1), (1, 1)], dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _data(batch=8, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(batch, 1, 9, 9, 3)), jnp.float32)   # runs, each a batch of one
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
    return x, w


@pytest.mark.parametrize("n, parts", [(1, 1), (2, 1), (3, 1), (4, 2), (6, 3), (7, 1), (8, 4), (9, 3), (32, 8),
                                      (1000, 8)])
def test_a_batch_is_cut_into_equal_parts_of_about_two(n, parts):
    assert batch_parts(n) == parts
    assert n % batch_parts(n) == 0


def test_values_and_gradients_equal_the_layers_on_a_plain_batch():
    x, w = _data()
    x = x[:, 0]
    split = micro_batched(conv)
    np.testing.assert_allclose(split(x, w), conv(x, w), rtol=RTOL, atol=ATOL)
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))                      # noqa: E731
    for got, want in zip(jax.grad(loss(split), (0, 1))(x, w), jax.grad(loss(conv), (0, 1))(x, w)):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_under_vmap_the_input_gradient_of_each_run_is_its_own():
    x, w = _data()
    per_run = lambda f: jax.jit(jax.vmap(jax.grad(lambda xi: jnp.sum(f(xi, w) ** 2))))   # noqa: E731
    np.testing.assert_allclose(per_run(micro_batched(conv))(x), per_run(conv)(x), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(jax.vmap(micro_batched(conv), (0, None))(x, w), jax.vmap(conv, (0, None))(x, w),
                               rtol=RTOL, atol=ATOL)
    # the parts are cut where vmap folds the runs into the batch: 8 runs of one, 4 convolutions of two
    jaxpr = str(jax.make_jaxpr(jax.vmap(micro_batched(conv), (0, None)))(x, w))
    assert jaxpr.count("conv_general_dilated[") == batch_parts(len(x)) == 4


def test_under_vmap_shared_weights_get_the_summed_and_the_per_run_cotangent():
    x, w = _data()
    summed = lambda f: jax.grad(lambda w: jnp.sum(jnp.cos(jax.vmap(f, (0, None))(x, w))))(w)   # noqa: E731
    np.testing.assert_allclose(summed(micro_batched(conv)), summed(conv), rtol=RTOL, atol=ATOL)
    per_run = lambda f: jax.vmap(jax.grad(lambda w, xi: jnp.sum(jnp.cos(f(xi, w)))), (None, 0))(w, x)  # noqa: E731
    got, want = per_run(micro_batched(conv)), per_run(conv)
    assert got.shape == (len(x), *w.shape)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_weights_that_differ_per_run_are_not_cut_across():
    x, w = _data()
    ws = jnp.stack([w * (i + 1) for i in range(len(x))])
    f = lambda g: jax.vmap(jax.grad(lambda xi, wi: jnp.sum(g(xi, wi) ** 2), (0, 1)))(x, ws)   # noqa: E731
    for got, want in zip(f(micro_batched(conv)), f(conv)):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# ----- where the layers use it ---------------------------------------------------------------------------

def test_only_caffenets_conv1_and_large_strided_deconvolutions_are_cut_on_cpu():
    assert jax.default_backend() == "cpu"
    assert layers.in_micro_batches("conv", (8, 227, 227, 3), (11, 11, 3, 96), (4, 4))          # conv1
    assert not layers.in_micro_batches("conv", (8, 27, 27, 48), (5, 5, 48, 128), (1, 1))      # conv2
    assert not layers.in_micro_batches("conv", (8, 28, 28, 1), (5, 5, 1, 32), (1, 1))         # embedded conv1
    assert layers.in_micro_batches("deconv", (8, 32, 32, 128), (4, 4, 128, 64), (2, 2))        # deconv2
    assert not layers.in_micro_batches("deconv", (8, 16, 16, 64), (4, 4, 64, 32), (2, 2))     # embedded
    assert not layers.in_micro_batches("deconv", (8, 32, 32, 64), (3, 3, 64, 64), (1, 1))     # stride 1


@pytest.mark.parametrize("kind", ["conv", "deconv"])
def test_a_cut_layer_equals_the_same_layer_uncut_under_vmap(kind):
    rng = np.random.default_rng(1)
    if kind == "conv":
        x = jnp.asarray(rng.normal(size=(4, 1, 39, 39, 3)), jnp.float32)
        w = jnp.asarray(rng.normal(0, 0.1, size=(11, 11, 3, 8)), jnp.float32)
        cut = lambda x, w: layers.conv2d(x, w, None, (4, 4))                                   # noqa: E731
        uncut = lambda x, w: layers.conv2d(x, w, None, (4, 4), form=layers.CONV1_FORM)         # noqa: E731
        reference = lambda x, w: jax.lax.conv_general_dilated(                                 # noqa: E731
            x, w, (4, 4), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    else:
        x = jnp.asarray(rng.normal(size=(4, 1, 32, 32, 4)), jnp.float32)
        w = jnp.asarray(rng.normal(0, 0.1, size=(4, 4, 4, 3)), jnp.float32)
        cut = lambda x, w: layers.deconv2d(x, w, None, (2, 2), (1, 1))                         # noqa: E731
        uncut = lambda x, w: layers.deconv2d(x, w, None, (2, 2), (1, 1), form="direct")        # noqa: E731
        reference = lambda x, w: jax.lax.conv_general_dilated(                                 # noqa: E731
            x, w, (1, 1), [(2, 2), (2, 2)], lhs_dilation=(2, 2), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert layers.in_micro_batches(kind, x.shape[1:], w.shape, (4, 4) if kind == "conv" else (2, 2))
    for f in (uncut, reference):
        np.testing.assert_allclose(jax.vmap(cut, (0, None))(x, w), jax.vmap(f, (0, None))(x, w),
                                   rtol=RTOL, atol=ATOL)
        grads = lambda g: jax.jit(jax.vmap(jax.grad(lambda xi: jnp.sum(jnp.tanh(g(xi, w))))))(x)  # noqa: E731
        np.testing.assert_allclose(grads(cut), grads(f), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("runs, form", [(4, "im2col"), (16, "direct")])
def test_under_vmap_a_small_map_convolution_takes_the_form_of_all_the_runs_batch(runs, form):
    """conv3-like layers run as im2col in small batches and directly in large ones (``IM2COL_MAX_ROWS``);
    a sweep's runs are each a batch of one under vmap, so the form is chosen where vmap folds them in."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(runs, 1, 10, 10, 8)), jnp.float32)    # 100 positions a run
    w = jnp.asarray(rng.normal(0, 0.1, size=(3, 3, 8, 16)), jnp.float32)   # 72 taps an output
    assert layers.conv_form((runs, 10, 10, 8), w.shape, (1, 1)) == form
    assert layers.conv_form((1, 10, 10, 8), w.shape, (1, 1)) == "im2col"
    ours = lambda xi: layers.conv2d(xi, w, None, (1, 1), (1, 1))                             # noqa: E731
    reference = lambda xi: jax.lax.conv_general_dilated(                                   # noqa: E731
        xi, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(jax.vmap(ours)(x), jax.vmap(reference)(x), rtol=RTOL, atol=ATOL)
    grads = lambda f: jax.jit(jax.vmap(jax.grad(lambda xi: jnp.sum(jnp.tanh(f(xi))))))      # noqa: E731
    np.testing.assert_allclose(grads(ours)(x), grads(reference)(x), rtol=RTOL, atol=ATOL)
    for program in (jax.vmap(ours), jax.vmap(jax.grad(lambda xi: jnp.sum(ours(xi) ** 2)))):
        hlo = jax.jit(program).lower(x).compile().as_text()   # optimized: the unused weight cotangent is gone
        assert (" dot(" in hlo) == (form == "im2col")
        assert (" convolution(" in hlo) == (form == "direct")


@pytest.mark.parametrize("runs, form", [(4, "dot"), (16, "conv")])
def test_under_vmap_a_dense_layer_takes_the_form_of_all_the_runs_batch(runs, form):
    """Fully connected layers run as a matmul below ``DENSE_CONV_MIN_ROWS`` rows and as a 1x1 convolution
    from there on CPU; under vmap each run is a batch of one, so the form follows all the runs together."""
    if jax.default_backend() != "cpu":
        pytest.skip("the rows rule is XLA:CPU's")
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(runs, 1, 24)), jnp.float32)
    w = jnp.asarray(rng.normal(0, 0.2, size=(24, 10)), jnp.float32)
    assert layers.dense_form((runs, 24)) == form and layers.dense_form((1, 24)) == "dot"
    ours = lambda xi: layers.dense(xi, w)                                                  # noqa: E731
    np.testing.assert_allclose(jax.vmap(ours)(x), jax.vmap(lambda xi: xi @ w)(x), rtol=RTOL, atol=ATOL)
    grads = lambda f: jax.jit(jax.vmap(jax.grad(lambda xi: jnp.sum(jnp.tanh(f(xi))))))      # noqa: E731
    np.testing.assert_allclose(grads(ours)(x), grads(lambda xi: xi @ w)(x), rtol=RTOL, atol=ATOL)
    hlo = jax.jit(jax.vmap(ours)).lower(x).compile().as_text()
    assert (" convolution(" in hlo) == (form == "conv")
