"""Objectives from peer libraries against closed forms: directions, dot x cosine, interpolation, alignment,
caricatures, and objectives on an ensemble of networks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
from jaxviz.core import directions as D
from jaxviz.core import objectives as O
from jaxviz.core.ensemble import Ensemble
from jaxviz.core.loop import Method
from jaxviz.core.params import Pixels
from jaxviz.core.run import optimize, optimize_batch
from jaxviz.core.updates import gradient_ascent, normalized_gradient_ascent
from jaxviz.models import preprocessing, shipped
from jaxviz.models.user import from_function

rng = np.random.default_rng(0)
SHAPE = (4, 4, 1)        # 16 input features
WIDTH = 5                # units of the linear layer


def linear_net(w: np.ndarray, name: str = "linear") -> jaxviz.Model:
    """acts["lin"] = x.reshape(n, -1) @ W: the gradient of any linear objective is constant."""
    return from_function(lambda p, x: {"lin": x.reshape(x.shape[0], -1) @ p["W"]},
                         {"W": jnp.asarray(w, jnp.float32)}, SHAPE, name=name)


W_A = rng.normal(size=(16, WIDTH)).astype(np.float32)
W_B = rng.normal(size=(16, WIDTH)).astype(np.float32)
NET = linear_net(W_A)


def ascend(net, objective, steps: int = 4, lr: float = 0.1, n: int = 1):
    """Plain gradient ascent from the zero image: after k steps the image is k * lr * grad (linear nets)."""
    return optimize(net, objective, Pixels(SHAPE), method=Method(steps, gradient_ascent(lr), images_per_run=n),
                    z0=jnp.zeros((n, *SHAPE)))


def cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def np_dot_cos(a: np.ndarray, v: np.ndarray, power: float, floor: float = 0.1) -> float:
    """Lucid's _dot_cossim per row, summed over the batch (eps aside)."""
    d = (a * v).sum(-1)
    c = d / (np.linalg.norm(a, axis=-1) * np.linalg.norm(v, axis=-1))
    return float((d * np.maximum(c, floor) ** power).sum())


# ----- direction and direction_cosine --------------------------------------------------------------

def test_direction_ascent_moves_the_input_along_w_d():
    d = rng.normal(size=WIDTH).astype(np.float32)
    result = ascend(NET, O.direction("lin", d))
    image = np.asarray(result.image).ravel()
    assert cos(image, W_A @ d) > 0.999
    np.testing.assert_allclose(image, 4 * 0.1 * (W_A @ d), rtol=1e-4, atol=1e-5)  # closed form


def test_direction_reads_positions_and_checks_the_vector():
    conv = jnp.asarray(rng.normal(size=(2, 5, 7, 3)), jnp.float32)
    v = np.array([1.0, -2.0, 0.5], np.float32)
    a = np.asarray(conv)
    assert float(O.direction("c", v)({"c": conv})) == pytest.approx(float((a.mean((1, 2)) @ v).sum()), rel=1e-5)
    assert float(O.direction("c", v, "center")({"c": conv})) == pytest.approx(float((a[:, 2, 3] @ v).sum()), rel=1e-5)
    assert float(O.direction("c", v, (4, 1))({"c": conv})) == pytest.approx(float((a[:, 4, 1] @ v).sum()), rel=1e-5)
    with pytest.raises(ValueError, match="needs 3 components"):
        O.direction("c", np.ones(4))({"c": conv})


def test_direction_cosine_power_zero_is_direction_and_matches_numpy():
    v = rng.normal(size=WIDTH).astype(np.float32)
    acts = rng.normal(size=(6, WIDTH)).astype(np.float32)
    acts[:3] += 2 * v  # some rows near the direction, some anywhere (cosine floored at 0.1)
    got = {"fc": jnp.asarray(acts)}
    assert float(O.direction_cosine("fc", v, power=0.0)(got)) == pytest.approx(float(O.direction("fc", v)(got)),
                                                                                rel=1e-6)
    for power in (1.0, 2.0, 3.5):
        assert float(O.direction_cosine("fc", v, power)(got)) == pytest.approx(np_dot_cos(acts, v, power), rel=1e-3)


def test_direction_cosine_gradient_matches_finite_differences():
    v = rng.normal(size=WIDTH).astype(np.float32)
    acts = jnp.asarray(v + 0.5 * rng.normal(size=(3, WIDTH)), jnp.float32)  # cosines well above the floor
    f = jax.jit(lambda a: O.direction_cosine("fc", v, 2.0)({"fc": a}))
    grad = jax.grad(f)(acts)
    h = 1e-2
    for _ in range(3):
        u = jnp.asarray(rng.normal(size=acts.shape), jnp.float32)
        numeric = (f(acts + h * u) - f(acts - h * u)) / (2 * h)
        assert float(jnp.sum(grad * u)) == pytest.approx(float(numeric), rel=2e-2, abs=1e-3)


def test_direction_from_the_target_is_vmapped_over_runs():
    """One compiled program, one direction per run: each run's image is along its own W d."""
    ds = jnp.asarray(rng.normal(size=(3, WIDTH)), jnp.float32)
    result = optimize_batch(NET, O.direction("lin"), Pixels(SHAPE), targets=ds,
                            method=Method(3, gradient_ascent(0.1)), z0=jnp.zeros((3, 1, *SHAPE)))
    for i in range(3):
        assert cos(result.image[i], W_A @ np.asarray(ds[i])) > 0.999


# ----- channel_interpolate and alignment -----------------------------------------------------------

def test_channel_interpolate_value_and_per_image_gradients():
    acts = rng.normal(size=(5, WIDTH)).astype(np.float32)
    t = np.arange(5) / 4
    expected = float(((1 - t) * acts[:, 1] + t * acts[:, 3]).sum())
    objective = O.channel_interpolate("fc", 1, 3)
    assert float(objective({"fc": jnp.asarray(acts)})) == pytest.approx(expected, rel=1e-6)
    grad = np.asarray(jax.grad(lambda a: objective({"fc": a}))(jnp.asarray(acts)))
    np.testing.assert_allclose(grad[0], np.eye(WIDTH)[1])       # the first image: unit a only
    np.testing.assert_allclose(grad[-1], np.eye(WIDTH)[3])      # the last: unit b only
    np.testing.assert_allclose(grad[2], 0.5 * (np.eye(WIDTH)[1] + np.eye(WIDTH)[3]))
    with pytest.raises(IndexError):
        O.channel_interpolate("fc", 1, WIDTH)({"fc": jnp.asarray(acts)})


def test_channel_interpolate_on_the_linear_net_in_batched_runs():
    """Image i of a run moves along (1 - t_i) W[:, a] + t_i W[:, b], in each of two vmapped runs."""
    result = optimize_batch(NET, O.channel_interpolate("lin", 0, 4), Pixels(SHAPE), keys=jax.random.split(
        jax.random.key(0), 2), method=Method(4, gradient_ascent(0.1), images_per_run=3), z0=jnp.zeros((2, 3, *SHAPE)))
    t = np.arange(3)[:, None] / 2
    expected = 4 * 0.1 * ((1 - t) * W_A[:, 0] + t * W_A[:, 4])  # the gradient is constant: closed form
    for run in range(2):
        images = np.asarray(result.image[run]).reshape(3, -1)
        np.testing.assert_allclose(images, expected, rtol=1e-4, atol=1e-5)
        assert cos(images[0], W_A[:, 0]) > 0.999 and cos(images[2], W_A[:, 4]) > 0.999


def np_alignment(a: np.ndarray, decay: float, max_distance: int = 4) -> float:
    total = 0.0
    for d in range(1, max_distance + 1):
        for i in range(len(a) - d):
            total += np.mean((a[i] - a[i + d]) ** 2) / decay ** d
    return -total


@pytest.mark.parametrize("n", [1, 2, 6])
def test_alignment_is_the_neighbour_distance_penalty(n):
    acts = rng.normal(size=(n, 3, 3, 4)).astype(np.float32)
    for decay in (2.0, 3.0):
        assert float(O.alignment("c", decay)({"c": jnp.asarray(acts)})) == pytest.approx(np_alignment(acts, decay),
                                                                                          rel=1e-5, abs=1e-7)
    same = np.repeat(acts[:1], n, axis=0)
    assert float(O.alignment("c")({"c": jnp.asarray(same)})) == 0.0


def test_alignment_composes_with_interpolation_and_pulls_neighbours_together():
    objective = O.channel_interpolate("lin", 0, 4) + 1.0 * O.alignment("lin")
    aligned = np.asarray(ascend(NET, objective, n=4).image).reshape(4, -1)
    t = np.arange(4)[:, None] / 3
    apart = 4 * 0.1 * ((1 - t) * W_A[:, 0] + t * W_A[:, 4])  # interpolation alone, in closed form
    gap = lambda images: np.abs(np.diff(images @ W_A, axis=0)).sum()
    assert gap(aligned) < 0.9 * gap(apart)


# ----- caricature -----------------------------------------------------------------------------------

def test_caricature_value_matches_numpy_and_checks_the_reference():
    a = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    ref = (a[:1] + rng.normal(size=(1, 3, 3, 4))).astype(np.float32)
    got = float(O.caricature("c", jnp.asarray(ref), 2.0)({"c": jnp.asarray(a)}))
    assert got == pytest.approx(np_dot_cos(a.reshape(2, -1), ref.reshape(1, -1), 2.0), rel=1e-3)
    from_target = float(O.caricature("c", power=2.0)({"c": jnp.asarray(a)}, jnp.asarray(ref)))
    assert from_target == pytest.approx(got, rel=1e-6)
    with pytest.raises(ValueError, match="do not match layer 'c'"):
        O.caricature("c", jnp.zeros((1, 3, 3, 5)))({"c": jnp.asarray(a)})


@pytest.fixture(scope="module")
def caffenet() -> jaxviz.Model:
    return jaxviz.load("caffenet")


@pytest.mark.slow  # about 15 s on a 2-core CPU: ten steps through the embedded CaffeNet
def test_caricature_raises_the_cosine_with_a_real_digit(caffenet):
    digit = preprocessing.to_network(shipped.reference_digits()[0][:1], caffenet.preprocessing)
    reference = O.reference_activations(caffenet, digit, "conv3")
    start = jnp.asarray(20.0 * rng.normal(size=(1, *caffenet.input_shape)), jnp.float32)
    result = optimize(caffenet, O.caricature("conv3", reference, 1.0), Pixels(caffenet.input_shape),
                      method=Method(10, normalized_gradient_ascent(4.0)), z0=start)
    cosine_with = lambda x: float(D.cosine(D.flatten(O.reference_activations(caffenet, x, "conv3")),
                                           D.flatten(reference))[0])
    before, after = cosine_with(start), cosine_with(result.image)
    assert after > before + 0.2, (before, after)  # about 0.3 -> 0.8 in ten steps


# ----- ensembles -----------------------------------------------------------------------------------

@pytest.mark.slow  # the embedded CaffeNet twice, unjitted
def test_ensemble_unit_equals_the_embedded_member_alone(caffenet):
    digits = jnp.asarray(preprocessing.to_network(shipped.reference_digits()[0][:3], caffenet.preprocessing))
    both = Ensemble({"a": caffenet, "b": caffenet})
    alone = O.unit("fc8", 3)(caffenet.function(caffenet.params, digits, ("fc8",)))
    together = O.unit("a/fc8", 3)(both.function(both.params, digits, ("a/fc8",)))
    assert float(together) == float(alone)
    assert "a/conv3" in both.tap_names and "b/fc8" in both.tap_names


def test_ensemble_sum_optimizes_both_members():
    both = Ensemble({"a": NET, "b": linear_net(W_B, "other")})
    result = ascend(both, O.unit("a/lin", 3) + O.unit("b/lin", 3))
    image = np.asarray(result.image).reshape(1, -1)
    np.testing.assert_allclose(image[0], 4 * 0.1 * (W_A[:, 3] + W_B[:, 3]), rtol=1e-4, atol=1e-5)
    assert (image @ W_A)[0, 3] > 0 and (image @ W_B)[0, 3] > 0
    # one member's objective on the ensemble is that member's own objective
    x = jnp.asarray(rng.normal(size=(2, *SHAPE)), jnp.float32)
    alone = O.unit("lin", 3)(NET.function(NET.params, x, ("lin",)))
    assert float(O.unit("a/lin", 3)(both.function(both.params, x, ("a/lin",)))) == float(alone)
    assert set(both.function(both.params, x, ("b/lin",))) == {"b/lin"}  # only the members asked for run


def test_ensemble_refuses_different_input_shapes_and_unknown_taps():
    big = from_function(lambda p, x: {"lin": x.reshape(x.shape[0], -1) @ p}, jnp.ones((784, 2)), (28, 28, 1))
    with pytest.raises(ValueError, match=r"'toy' takes \(4, 4, 1\).*'big' takes \(28, 28, 1\)"):
        Ensemble({"toy": NET, "big": big})
    both = Ensemble({"a": NET, "b": NET})
    with pytest.raises(ValueError, match="no tap 'c/lin'.*a, b"):
        both.function(both.params, jnp.zeros((1, *SHAPE)), ("c/lin",))
    with pytest.raises(ValueError, match="without '/'"):
        Ensemble({"a/b": NET})
