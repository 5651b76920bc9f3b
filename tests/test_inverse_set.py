"""Inverse-set sampling (Hada & Carreira-Perpinan 2019): ranges met, closed-form slab, diversity, bad input.

The embedded-pair cases run small (K = 5, n = 30, 30 inner steps) and share compiled programs through one
constraint set; the paper-sized run (K = 10, n = 500) is marked slow and prints its round count.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz import cli
from jaxviz.models import shipped
from jaxviz import inverse_set as inv
from jaxviz.models import crop_to_classifier, load
from jaxviz.core.objectives import unit_values

SMALL = inv.InverseSetConfig(k=5, n=30, inner_steps=30, lr=0.2)
FC8_3 = inv.Constraint("fc8", 3, 10.0, 15.0)   # held-out "3"s score 18-22: a range below the class's usual


@pytest.fixture(scope="module")
def pair():
    return load("caffenet"), load("generator")


def fresh_units(clf, images, constraints):
    """Each constraint's activation from a new forward pass of the classifier on the returned images."""
    taps = tuple(sorted({c.layer for c in constraints}))
    acts = clf(jnp.asarray(images), taps)
    return np.stack([np.asarray(unit_values(acts, c.layer, c.position)[:, c.unit]) for c in constraints], -1)


def assert_in_ranges(values, constraints):
    for p, c in enumerate(constraints):
        assert np.all(values[:, p] >= c.z1) and np.all(values[:, p] <= c.z2), \
            (c.name, values[:, p].min(), values[:, p].max())


# ----- the pure pieces ------------------------------------------------------------------------------------------

def test_distance_sums_match_brute_force():
    rng = np.random.default_rng(0)
    e, a = rng.normal(size=(6, 7)), rng.normal(size=(40, 7))
    pair_sum = sum(np.sum((e[i] - e[j]) ** 2) for i in range(6) for j in range(6))
    cross = sum(np.sum((e[i] - a[y]) ** 2) for i in range(6) for y in range(40))
    stats = inv.AcceptedStats(jnp.asarray(40), jnp.asarray(a.sum(0)), jnp.asarray(np.sum(a * a)))
    np.testing.assert_allclose(inv.pairwise_sq_sum(jnp.asarray(e)), pair_sum, rtol=1e-5)
    np.testing.assert_allclose(inv.accepted_sq_sum(jnp.asarray(e), stats), cross, rtol=1e-5)
    np.testing.assert_allclose(inv.accepted_sq_sum(jnp.asarray(e), inv.empty_stats(7)), 0.0)


def test_slack_multipliers_and_band():
    c = jnp.asarray([-1.0, 0.2, 3.0])
    lam, mu = jnp.asarray([0.0, 2.0, 5.0]), jnp.asarray(10.0)
    s = inv.slack(c, lam, mu)
    np.testing.assert_allclose(s, [0.0, 0.0, 2.5])
    # The paper's update max(lambda - mu c, 0) is the textbook lambda - mu (c - s) at the optimal slack.
    new_lam, new_mu = inv.update_multipliers(c, lam, mu, 10.0)
    np.testing.assert_allclose(new_lam, lam - mu * (c - s), atol=1e-6)
    assert float(new_mu) == 100.0
    # Differentiating through the closed-form slack gives the gradient with the slack held fixed.
    g = jax.grad(lambda c: inv.constraint_penalty(c, lam, mu))(c)
    fixed = jax.grad(lambda c: jnp.sum(-lam * (c - s) + 0.5 * mu * (c - s) ** 2))(c)
    np.testing.assert_allclose(g, fixed, atol=1e-6)
    # eps0 = eps/2: the target band is the middle half of [z1, z2].
    vals = inv.constraint_values(jnp.asarray([[12.5], [11.0], [15.0]]), jnp.asarray([10.0]), jnp.asarray([20.0]),
                                 jnp.asarray([5.0]))
    np.testing.assert_allclose(vals, [[0.0, 5.0], [-1.5, 6.5], [2.5, 2.5]])


# ----- the closed-form case: sigmoid(w.x + b) on [0, 1]^d (paper sec. 3.1) ------------------------------------

D = 16
W = np.asarray(jax.random.normal(jax.random.key(1), (D,)), np.float32)
B = float(-0.5 * W.sum())
T_MAX = float(np.maximum(W, 0).sum() + B)        # the largest logit on the box
T1, T2 = 0.2 * T_MAX, 0.5 * T_MAX                 # the slab T1 <= w.x + b <= T2


def sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def logistic_problem(z1=sigmoid(T1), z2=sigmoid(T2), encoder=lambda x: x):
    return inv.problem_from_functions(
        generator=lambda c: c, encoder=encoder, neurons=lambda x: jax.nn.sigmoid(x @ W + B),
        z1=z1, z2=z2, init_inputs=lambda key, k: jax.random.uniform(key, (k, D)), code_lower=0.0, code_upper=1.0)


def orthogonal_spread(x):
    """Mean std of the samples along an orthonormal basis of the directions orthogonal to w."""
    u = W / np.linalg.norm(W)
    basis = np.linalg.qr(np.concatenate([u[:, None], np.random.default_rng(0).normal(size=(D, D - 1))], 1))[0]
    return float(((x - x.mean(0)) @ basis[:, 1:]).std(0).mean())


@pytest.fixture(scope="module")
def logistic_runs():
    problem = logistic_problem()
    cfg = inv.InverseSetConfig(n=200, lr=0.05)
    return (inv.sample(problem, jax.random.key(0), cfg),
            inv.sample(problem, jax.random.key(0), inv.InverseSetConfig(n=200, lr=0.05, diversity="none")))


def test_logistic_samples_fill_the_exact_slab(logistic_runs):
    res = logistic_runs[0]
    assert res.status == "ok" and len(res.codes) == 200
    logit = res.codes.astype(np.float64) @ W + B
    assert np.all(logit >= T1 - 1e-4) and np.all(logit <= T2 + 1e-4), (logit.min(), logit.max())
    assert res.codes.min() >= 0.0 and res.codes.max() <= 1.0
    assert np.all(res.activations[:, 0] >= sigmoid(T1)) and np.all(res.activations[:, 0] <= sigmoid(T2))
    # Spread across the slab: a uniform sample of the box has std 1/sqrt(12) = 0.289 along any direction;
    # the squared-distance objective pushes towards the corners (measured 0.48; 0.5 is the most possible).
    assert orthogonal_spread(res.codes) > 0.8 / np.sqrt(12)
    # Acceptance order: seeds first (round 0), rounds never decrease.
    assert np.all(res.rounds[:10] == 0) and np.all(np.diff(res.rounds) >= 0)
    assert res.sampling_rounds >= (200 - 10) // 10


def test_logistic_diversity_term_spreads_samples(logistic_runs):
    with_div, without = logistic_runs
    assert without.status == "ok"
    assert orthogonal_spread(with_div.codes) > 1.5 * orthogonal_spread(without.codes)
    assert (with_div.diversity["mean_pairwise_distance_E"]
            > 1.5 * without.diversity["mean_pairwise_distance_E"])


def test_logistic_joint_and_code_distances():
    joint = inv.sample(logistic_problem(), jax.random.key(1), inv.InverseSetConfig(n=30, lr=0.05, joint=True))
    assert joint.status == "ok" and len(joint.codes) == 30 and joint.sampling_rounds == 0
    code = inv.sample(logistic_problem(encoder=lambda x: jnp.tanh(3 * x)), jax.random.key(1),
                      inv.InverseSetConfig(n=40, lr=0.05, diversity="code"))
    for res in (joint, code):
        logit = res.codes @ W + B
        assert np.all(logit >= T1 - 1e-4) and np.all(logit <= T2 + 1e-4)


def test_logistic_shared_start():
    # Sec. 4.2: every code starts from one X0 (plus tiny jitter); only the diversity term separates them.
    runs = [inv.sample(logistic_problem(), jax.random.key(2),
                       inv.InverseSetConfig(n=60, lr=0.05, shared_start=True, diversity=d)) for d in ("encoder", "none")]
    assert all(r.status == "ok" for r in runs)
    assert orthogonal_spread(runs[0].codes) > 3.0 * orthogonal_spread(runs[1].codes)


def test_logistic_unreachable_range_stops_cleanly():
    # Above the box's largest activation sigmoid(T_MAX): empty. The best reached climbs well above the random
    # start (logit ~ 0) towards that maximum (measured logit 0.69 T_MAX: the diversity term pulls the other way).
    res = inv.sample(logistic_problem(sigmoid(T_MAX + 1.0), sigmoid(T_MAX + 2.0)), jax.random.key(0),
                     inv.InverseSetConfig(k=4, n=8, lr=0.05, inner_steps=50, max_outer=3))
    assert res.status == "unreachable" and len(res.codes) == 0
    assert res.outer_iterations == 3 and "not reached" in res.message
    assert sigmoid(0.5 * T_MAX) < res.best_activations[0] <= sigmoid(T_MAX) + 1e-6


def test_bad_input():
    with pytest.raises(ValueError, match="empty range"):
        inv.Constraint("fc8", 3, 5.0, 4.0)
    with pytest.raises(ValueError, match="empty range"):
        logistic_problem(0.9, 0.8)
    with pytest.raises(ValueError, match="diversity"):
        inv.InverseSetConfig(diversity="pixels")
    with pytest.raises(ValueError, match="k <= n"):
        inv.InverseSetConfig(k=10, n=5)


def test_unknown_neuron(pair):
    clf, gen = pair
    with pytest.raises(ValueError, match="unknown tap"):
        inv.sample_inverse_set(clf, gen, inv.Constraint("fc9", 0, 0.0, 1.0))
    with pytest.raises(IndexError, match="out of range"):
        inv.sample_inverse_set(clf, gen, inv.Constraint("fc8", 10, 0.0, 1.0))
    with pytest.raises(ValueError, match="outside layer"):
        inv.sample_inverse_set(clf, gen, inv.Constraint("conv5", 0, 0.0, 1.0, (40, 0)))


# ----- the embedded pair --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fc8_runs(pair):
    clf, gen = pair
    key = jax.random.key(3)
    return (inv.sample_inverse_set(clf, gen, FC8_3, key, SMALL),
            inv.sample_inverse_set(clf, gen, FC8_3, key, dataclasses.replace(SMALL, diversity="none")))


@pytest.mark.slow
def test_embedded_samples_meet_the_range_in_a_fresh_pass(pair, fc8_runs):
    clf, gen = pair
    res = fc8_runs[0]
    assert res.status == "ok" and len(res.codes) == SMALL.n and res.outer_iterations >= 1
    assert_in_ranges(fresh_units(clf, res.images, [FC8_3]), [FC8_3])
    # The images are G(codes), and the codes stay in the generator's [0, ub] box.
    again = crop_to_classifier(gen(jnp.asarray(res.codes[:5]), ("deconv0",))["deconv0"], gen.config)
    np.testing.assert_allclose(res.images[:5], np.asarray(again), atol=1e-3)
    assert res.codes.min() >= 0.0 and np.all(res.codes <= shipped.embedded_code_bounds() + 1e-6)
    assert res.lam.shape == (SMALL.k, 2) and res.mu == SMALL.mu0 * SMALL.mu_growth ** res.outer_iterations


@pytest.mark.slow
def test_embedded_diversity_term_matters(fc8_runs):
    # Same X0, same seeds' start: eq. (14) (no diversity term) gives near-copies (paper sec. 4.2).
    with_div, without = fc8_runs
    assert without.status == "ok"
    for space in ("mean_pairwise_distance_E", "mean_pairwise_distance_pixels"):
        assert with_div.diversity[space] > 2.0 * without.diversity[space], space


@pytest.mark.slow
def test_intersection_of_neurons_in_two_layers(pair):
    clf, gen = pair
    cons = [FC8_3, inv.Constraint("conv5", 57, 3.0, 6.0)]
    res = inv.sample_inverse_set(clf, gen, cons, jax.random.key(0), SMALL)
    assert res.status == "ok" and res.activations.shape == (SMALL.n, 2)
    assert_in_ranges(fresh_units(clf, res.images, cons), cons)


@pytest.mark.slow
def test_embedded_empty_range_stops_cleanly(pair):
    clf, gen = pair
    # fc6 is read after its ReLU: never negative.
    res = inv.sample_inverse_set(clf, gen, inv.Constraint("fc6", 7, -5.0, -1.0), jax.random.key(0),
                                 inv.InverseSetConfig(k=5, n=30, inner_steps=5, max_outer=2))
    assert res.status == "unreachable" and res.outer_iterations == 2 and len(res.codes) == 0
    assert res.best_activations[0] >= 0.0


def test_cli_inverse_set(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["inverse-set", "--neuron", "fc8:3:10:15", "--n", "10", "--k", "5", "--inner-steps", "30",
                   "--lr", "0.2", "--out", str(out)])
    assert rc == 0, capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["samples"] == 10
    assert (out / "inverse_set.png").stat().st_size > 0
    with np.load(out / "samples.npz") as f:
        assert f["codes"].shape == (10, 256) and f["activations"].shape == (10, 1)
    assert cli.main(["inverse-set", "--neuron", "fc9:0:0:1", "--out", str(tmp_path / "bad")]) == 2
    assert cli.main(["inverse-set", "--neuron", "fc8:3:5:4", "--out", str(tmp_path / "bad")]) == 2


@pytest.mark.slow
def test_paper_sized_run(pair):
    clf, gen = pair
    res = inv.sample_inverse_set(clf, gen, FC8_3, jax.random.key(0), inv.InverseSetConfig())
    assert res.status == "ok" and len(res.codes) == 500
    assert 49 <= res.sampling_rounds <= 300
    assert_in_ranges(fresh_units(clf, res.images, [FC8_3]), [FC8_3])
    print(f"n=500 K=10: {res.sampling_rounds} sampling rounds, {res.outer_iterations} outer iterations, "
          f"diversity {res.diversity}")
