"""Objectives against closed forms on hand-made activations (no network needed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz.core import objectives as O

rng = np.random.default_rng(0)
FC = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)            # (batch, units)
CONV = jnp.asarray(rng.normal(size=(2, 5, 7, 4)), jnp.float32)    # NHWC


def test_unit_reads_fc_units_and_conv_positions():
    acts = {"fc": FC, "conv": CONV}
    assert float(O.unit("fc", 3)(acts)) == pytest.approx(float(FC[:, 3].sum()))
    assert float(O.unit("conv", 1)(acts)) == pytest.approx(float(CONV[:, 2, 3, 1].sum()))  # centre of 5x7
    assert float(O.unit("conv", 1, (4, 0))(acts)) == pytest.approx(float(CONV[:, 4, 0, 1].sum()))
    assert float(O.channel("conv", 2)(acts)) == pytest.approx(float(CONV[..., 2].mean(axis=(1, 2)).sum()), rel=1e-6)
    with pytest.raises(ValueError, match="outside layer 'conv'"):
        O.unit("conv", 0, (5, 0))(acts)


def test_softmax_and_log_softmax_closed_forms():
    acts = {"fc": FC}
    p = np.exp(np.asarray(FC)) / np.exp(np.asarray(FC)).sum(-1, keepdims=True)
    assert float(O.softmax("fc", 2)(acts)) == pytest.approx(float(p[:, 2].sum()), rel=1e-6)
    assert float(O.log_softmax("fc", 2)(acts)) == pytest.approx(float(np.log(p[:, 2]).sum()), rel=1e-6)


def test_log_softmax_gradient_with_respect_to_logits():
    """d log s_c / d a = e_c - s: the target goes up, every other unit down by its probability."""
    grad = jax.grad(lambda a: O.log_softmax("fc", 1)({"fc": a}))(FC)
    s = jax.nn.softmax(FC, axis=-1)
    np.testing.assert_allclose(grad, jax.nn.one_hot(1, 5) - s, rtol=1e-6, atol=1e-7)


def test_tempered_log_softmax_closed_form_and_limits():
    """T log softmax(a / T): T = 1 is the plain objective; as T -> 0 the gradient tends to that of the
    margin over the best other unit while the target is beaten (and to 0 once it leads), as T -> inf to
    that of the target minus the layer's mean."""
    a = np.asarray(FC, np.float64)
    acts = {"fc": FC}
    for t in (0.5, 5.0):
        want = t * (a[:, 2] / t - np.log(np.exp(a / t).sum(-1)))
        assert float(O.log_softmax("fc", 2, temperature=t)(acts)) == pytest.approx(float(want.sum()), rel=1e-5)
    assert float(O.log_softmax("fc", 2, temperature=1.0)(acts)) == float(O.log_softmax("fc", 2)(acts))
    grad = lambda t: np.asarray(jax.grad(lambda x: O.log_softmax("fc", 2, temperature=t)({"fc": x}))(FC))
    best_other = np.where(np.arange(5) == 2, -np.inf, a).argmax(-1)
    beaten = (a[:, 2] < a[np.arange(2), best_other])[:, None]          # row 0: the target leads; row 1: not
    assert beaten.ravel().tolist() == [False, True]
    margin = (np.eye(5)[[2, 2]] - np.eye(5)[best_other]) * beaten
    np.testing.assert_allclose(grad(1e-3), margin, atol=1e-3)
    np.testing.assert_allclose(grad(1e4), np.eye(5)[[2, 2]] - 0.2, atol=1e-3)
    with pytest.raises(ValueError, match="temperature > 0"):
        O.log_softmax("fc", 2, temperature=0.0)


def test_weighted_units_maximize_one_and_minimize_another():
    acts = {"fc": FC}
    both = O.weighted_units("fc", {0: 1.0, 4: -0.5})(acts)
    assert float(both) == pytest.approx(float((FC[:, 0] - 0.5 * FC[:, 4]).sum()), rel=1e-6)
    dense = O.weighted_units("fc", [1.0, 0, 0, 0, -0.5])(acts)
    assert float(dense) == pytest.approx(float(both), rel=1e-6)


def test_feature_inversion_is_the_normalized_distance():
    ref = CONV + 1.0
    value = O.feature_inversion("conv", ref)({"conv": CONV})
    per_image = (np.square(np.asarray(CONV - ref)).sum(axis=(1, 2, 3))
                 / np.square(np.asarray(ref)).sum(axis=(1, 2, 3)))
    assert float(value) == pytest.approx(-per_image.sum(), rel=1e-6)
    assert float(O.feature_inversion("conv")({"conv": CONV}, CONV)) == 0.0   # reference from the target


def test_deepdream_is_the_mean_square():
    assert float(O.deepdream("conv")({"conv": CONV})) == pytest.approx(
        float(np.square(np.asarray(CONV)).mean(axis=(1, 2, 3)).sum()), rel=1e-6)


def test_diversity_is_zero_for_identical_images_and_higher_for_different_ones():
    same = jnp.concatenate([CONV[:1], CONV[:1]])
    assert float(O.diversity("conv")({"conv": same})) == pytest.approx(-1.0, abs=1e-5)  # cosine 1, n = 2
    assert float(O.diversity("conv")({"conv": CONV})) > -1.0


def test_rank_in_layer_counts_units_above_the_target():
    acts = {"fc": jnp.array([[0.1, 0.5, 0.3, 0.9]])}
    assert int(O.rank_in_layer(acts, "fc", 3)[0]) == 0
    assert int(O.rank_in_layer(acts, "fc", 0)[0]) == 3

