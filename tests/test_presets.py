"""Presets: each seed paper's method against a plain transcription of its original loop, on tiny random nets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from jaxviz.core import objectives as O
from jaxviz import recipes as P
from jaxviz.core import updates as U
from jaxviz.models import code_bounds
from jaxviz.core import operators
from jaxviz.models import CaffeNet, CaffeNetConfig, Generator, GeneratorConfig, crop_to_classifier
from jaxviz.models.caffenet import ConvSpec
from jaxviz.models.generator import DeconvSpec
from jaxviz.models.model import Model

CODE = 32
CLASSIFIER = CaffeNetConfig(input_size=28, in_channels=1,
                            convs=(ConvSpec(8, 5, 1, 2, 1), ConvSpec(8, 5, 1, 2, 2), ConvSpec(8, 3, 1, 1, 1),
                                   ConvSpec(8, 3, 1, 1, 2), ConvSpec(8, 3, 1, 1, 2)),
                            fc=(CODE, 32, 10))
GENERATOR = GeneratorConfig(code_size=CODE, fc=(32, 32, 32), reshape=(2, 4, 4),
                            deconvs=(DeconvSpec(4, 4, 2, 1), DeconvSpec(4, 3, 1, 1), DeconvSpec(4, 4, 2, 1),
                                     DeconvSpec(4, 3, 1, 1), DeconvSpec(4, 4, 2, 1), DeconvSpec(4, 3, 1, 1),
                                     DeconvSpec(4, 3, 1, 1), DeconvSpec(4, 3, 1, 1), DeconvSpec(1, 3, 1, 1)),
                            output_size=32, crop_size=28)
MEAN = 33.0


def _random_params(module, x, taps, seed: int, gain: float):
    """He-style random weights (no compiled init: shapes come from tracing), scaled for lively activations."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x, taps))["params"]
    rng = np.random.default_rng(seed)

    def leaf(s):
        if len(s.shape) == 1:
            return jnp.asarray(rng.normal(0, 0.1, s.shape), jnp.float32)
        return jnp.asarray(rng.normal(size=s.shape) * gain / np.sqrt(np.prod(s.shape[:-1])), jnp.float32)
    return jax.tree_util.tree_map(leaf, shapes)


@pytest.fixture(scope="module")
def net() -> Model:
    """A tiny random CaffeNet (28x28x1, fc6 of 32 units); fc8 logits spread by a few units."""
    module = CaffeNet(CLASSIFIER)
    return Model("caffenet", module, _random_params(module, jnp.zeros((1, 28, 28, 1)), ("prob",), 0, 1.0), {})


@pytest.fixture(scope="module")
def gen() -> Model:
    """A tiny random fc6 generator: 32-unit code -> 32x32x1 (std ~50, Caffe-like scale), cropped to 28."""
    module = Generator(GENERATOR)
    return Model("generator", module, _random_params(module, jnp.zeros((1, CODE)), ("deconv0",), 1, 2.3), {})


def _image(net, gen, h):
    return crop_to_classifier(gen.apply(gen.params, h, ("deconv0",))["deconv0"], GENERATOR)


def _unit(net, gen, layer, c):
    """a_c(crop(G(h))) summed over the batch, as a function of the code."""
    return lambda h: net.apply(net.params, _image(net, gen, h), (layer,))[layer][:, c].sum()


# ----- DGN-AM ------------------------------------------------------------------------------------------

def _dgn_am_transcription(net, gen, h0, ub, n, unit, lr0=8.0, lr_end=1e-10):
    """methods.md steps 1-5 in NumPy (jax only for g = d a / d h): codes after each update, acts per pass."""
    act = jax.jit(_unit(net, gen, "fc8", unit))
    grad = jax.jit(jax.grad(_unit(net, gen, "fc8", unit)))
    h = np.array(h0, np.float32)
    codes, acts = [], []
    for i in range(n):
        acts.append(float(act(jnp.asarray(h))))
        if i == n - 1:
            break  # the original returns the image of this last forward pass
        lr = lr0 + (lr_end - lr0) * i / n
        g = np.asarray(grad(jnp.asarray(h)), np.float32)
        h = h + lr * g / np.abs(g).mean()
        h = np.minimum(np.maximum(h, 0.0), ub)
        h = h * 0.99
        codes.append(h.copy())
    return codes, acts


def test_dgn_am_update_rule_matches_transcription_step_by_step(net, gen):
    n, unit = 11, 3
    ub = np.random.default_rng(0).uniform(0.5, 3.0, CODE).astype(np.float32)
    h0 = np.random.default_rng(1).normal(size=(1, CODE)).astype(np.float32)
    codes, _ = _dgn_am_transcription(net, gen, h0, ub, n, unit)
    preset = P.dgn_am(gen, bounds=ub, steps=n)
    objective = O.unit("fc8", unit)
    grad = jax.jit(jax.grad(lambda h: objective(
        {"fc8": net.apply(net.params, preset.param.render(gen.params, h), ("fc8",))["fc8"]})))
    opt, op = preset.method.optimizer, preset.method.operator
    h, state = jnp.asarray(h0), opt.init(jnp.asarray(h0))
    for i, expected in enumerate(codes):
        g = grad(h)
        updates, state = opt.update(-g, state, h)
        h = op(h + updates, operators.OperatorContext(jnp.int32(i), jax.random.key(0), g))
        np.testing.assert_allclose(np.asarray(h), expected, rtol=1e-4, atol=1e-4, err_msg=f"update {i}")


def test_dgn_am_loop_matches_transcription(net, gen):
    n, unit = 11, 3
    ub = np.random.default_rng(0).uniform(0.5, 3.0, CODE).astype(np.float32)
    h0 = np.random.default_rng(1).normal(size=(1, CODE)).astype(np.float32)
    codes, acts = _dgn_am_transcription(net, gen, h0, ub, n, unit)
    result = P.dgn_am(gen, bounds=ub, steps=n).visualize(net, O.unit("fc8", unit), z0=h0)
    # One activation per forward pass of the original: the loop's n-1 traced passes plus its final one.
    traced = np.append(np.asarray(result.activation[:, 0]), float(result.final_activation[0]))
    np.testing.assert_allclose(traced, acts, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(result.z), codes[-1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(result.image), np.asarray(_image(net, gen, jnp.asarray(codes[-1]))),
                               rtol=1e-4, atol=1e-3)
    assert acts[-1] > acts[0]  # the unit's activation rises over the run


def test_dgn_am_clips_then_decays_and_targets_conv_centre(net, gen):
    preset = P.dgn_am(gen, bounds=np.full(CODE, 2.0, np.float32), steps=6)
    result = preset.visualize(net, O.unit("conv5", 3, position="center"), key=jax.random.key(2))
    assert int(result.stopped_step) == -1
    z = np.asarray(result.z)
    assert z.min() >= 0.0 and z.max() <= 2.0 * 0.99 + 1e-6  # clip to [0, ub] then * 0.99
    assert result.activation.shape == (5, 1)  # 6 forward passes: 5 traced updates + the final one
    assert float(result.final_activation[0]) > float(result.activation[0, 0])


def test_dgn_am_bounds_defaults_and_errors(gen):
    with pytest.raises(ValueError, match="no code bounds"):
        P.dgn_am(gen)
    with pytest.raises(ValueError, match="7 values"):
        P.dgn_am(gen, bounds=np.ones(7))
    real = Model("generator", Generator(GeneratorConfig()), {}, {})  # 4096 code: DGN-AM's released file
    assert code_bounds(real).shape == (4096,)
    inline = Model("generator", gen.module, gen.params, {"code": {"bounds": [1.5] * CODE}})
    np.testing.assert_array_equal(code_bounds(inline), np.full(CODE, 1.5, np.float32))


def test_embedded_generator_bounds_come_from_its_card():
    from jaxviz import models
    from jaxviz.models import shipped
    np.testing.assert_array_equal(code_bounds(models.load("generator")), shipped.embedded_code_bounds())


def test_preset_without_objective_says_so(net, gen):
    with pytest.raises(ValueError, match="no default objective"):
        P.dgn_am(gen, bounds=1.0, steps=2).visualize(net)


# ----- PPGN sampler ------------------------------------------------------------------------------------

def _eq13_direction(net, gen, h0, c, eps1, eps2):
    """eps1 (E(G(h)) - h) + eps2 J_G^T d log p(y_c|x)/dx, by hand."""
    def log_p(h):
        return jax.nn.log_softmax(net.apply(net.params, _image(net, gen, h), ("fc8",))["fc8"])[:, c].sum()
    h = jnp.asarray(h0)
    e = net.apply(net.params, _image(net, gen, h), ("fc6",))["fc6"]
    return np.asarray(eps1 * (e - h) + eps2 * jax.grad(log_p)(h))


@pytest.mark.parametrize("eps3", [0.0, 0.3])
def test_sampler_step_is_eq13(net, gen, eps3):
    c, eps1, eps2, lr = 4, 0.1, 1.0, 0.7
    h0 = np.abs(np.random.default_rng(2).normal(size=(1, CODE))).astype(np.float32)
    d_h = _eq13_direction(net, gen, h0, c, eps1, eps2)
    if eps3:
        # The documented key: derived from the starting code, split once per step.
        _, sub = jax.random.split(U.sampler_noise_key(jnp.asarray(h0)))
        d_h = d_h + eps3 * np.asarray(jax.random.normal(sub, h0.shape))
    expected = np.clip(h0 + lr * d_h / np.abs(d_h).mean(), 0.0, 30.0)
    preset = P.ppgn_sampler(gen, eps1=eps1, eps2=eps2, eps3=eps3, lr=lr, steps=1)
    result = preset.visualize(net, target=c, z0=h0)
    np.testing.assert_allclose(np.asarray(result.z), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_prior_term_gradient_is_reconstruction_error(net, gen):
    h = jnp.asarray(np.abs(np.random.default_rng(3).normal(size=(2, CODE))).astype(np.float32))
    prior = P.ppgn_prior("fc6")

    def value(h):
        return prior({"fc6": net.apply(net.params, _image(net, gen, h), ("fc6",))["fc6"], "code": h})
    e = net.apply(net.params, _image(net, gen, h), ("fc6",))["fc6"]
    assert float(value(h)) == 0.0
    np.testing.assert_allclose(np.asarray(jax.grad(value)(h)), np.asarray(e - h), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_exact_and_diagonal_log_softmax_gradients(net, gen):
    c = 2
    h = jnp.asarray(np.abs(np.random.default_rng(4).normal(size=(1, CODE))).astype(np.float32))
    logits = lambda h: net.apply(net.params, _image(net, gen, h), ("fc8",))["fc8"]

    def grad_of(objective):
        return np.asarray(jax.grad(lambda h: objective({"fc8": logits(h)}))(h))
    exact = grad_of(P.ppgn_condition("fc8", c, exact=True))
    diagonal = grad_of(P.ppgn_condition("fc8", c, exact=False))
    s = np.asarray(jax.nn.softmax(logits(h)))[0]
    jac = np.asarray(jax.jacobian(lambda h: logits(h)[0])(h))[:, 0, :]  # (classes, code)
    np.testing.assert_allclose(diagonal[0], (1 - s[c]) * jac[c], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(exact[0], jac[c] - s @ jac, rtol=1e-4, atol=1e-6)
    # They differ by exactly the off-diagonal terms -sum_{j != c} s_j d a_j/dh.
    others = np.delete(np.arange(len(s)), c)
    np.testing.assert_allclose(exact[0] - diagonal[0], -s[others] @ jac[others], rtol=1e-4, atol=1e-6)
    assert np.abs(exact - diagonal).max() > 1e-3 * np.abs(exact).max()


@pytest.mark.parametrize("exact", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_sampler_raises_class_probability_and_keeps_code_range(net, gen, exact):
    # lr 1 (the original's) overshoots on this tiny random net, whose codes are of order 1.
    preset = P.ppgn_sampler(gen, steps=12, lr=0.3, exact_log_softmax=exact)
    result = preset.visualize(net, target=5, key=jax.random.key(0))
    log_p = np.asarray(result.objective)  # the prior term's value is 0: the objective is log p(y_c|x)
    assert float(result.final_objective) > log_p[0]
    z = np.asarray(result.z)
    assert z.min() >= 0.0 and z.max() <= 30.0


def test_sampler_noise_is_reproducible_from_the_run_key(net, gen):
    preset = P.ppgn_sampler(gen, eps3=0.5, steps=3)
    a = preset.visualize(net, target=1, key=jax.random.key(7))
    b = preset.visualize(net, target=1, key=jax.random.key(7))
    other = preset.visualize(net, target=1, key=jax.random.key(8))
    np.testing.assert_array_equal(np.asarray(a.z), np.asarray(b.z))
    assert not np.allclose(np.asarray(a.z), np.asarray(other.z))


def test_sampler_encoder_must_match_code(net, gen):
    with pytest.raises(ValueError, match="E must map images to codes"):
        P.ppgn_sampler(gen, encoder_layer="fc8", steps=2).visualize(net, target=0)


# ----- Yosinski et al. 2015 -----------------------------------------------------------------------------

def _yosinski_r(x, grad, s: P.YosinskiSetting, step: int, mean: float) -> np.ndarray:
    """Their optimize loop's regularization block (NCHW there, NHWC here), then the next pass's range clip."""
    x = x * (1 - s.decay)
    if s.blur_every and s.blur_radius > 0 and step % s.blur_every == 0:
        for ch in range(x.shape[-1]):
            x[0, :, :, ch] = scipy.ndimage.gaussian_filter(x[0, :, :, ch], s.blur_radius)
    if s.norm_pct > 0:
        norms = np.linalg.norm(x, axis=-1)
        x = x - x * (norms < np.percentile(norms, s.norm_pct))[..., None]
    if s.contribution_pct > 0:
        benefit = np.abs((grad * -x).sum(-1))
        x = x - x * (benefit < np.percentile(benefit, s.contribution_pct))[..., None]
    return np.clip(x + mean, 0, 255) - mean


@pytest.mark.parametrize("step", [0, 1])
def test_yosinski_operators_fire_in_order(step):
    s = P.YosinskiSetting(0.2, 0.8, 2, 30.0, 40.0, 10, 1.0, None)
    rng = np.random.default_rng(step)
    x = rng.normal(0, 40, (1, 12, 12, 3)).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    got = P.yosinski_operator(s, MEAN)(jnp.asarray(x), operators.OperatorContext(jnp.int32(step), jax.random.key(0),
                                                                                jnp.asarray(g)))
    np.testing.assert_allclose(np.asarray(got), _yosinski_r(x.copy(), g, s, step, MEAN), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("setting", [1, 2, 3, 4])
def test_yosinski_settings_run_and_raise_the_unit(net, setting):
    preset = P.yosinski2015(setting, (28, 28, 1), mean=MEAN, steps=6)
    assert preset.method.steps == 5  # no update after the last forward pass, as in the original
    result = preset.visualize(net, O.unit("fc8", 2), key=jax.random.key(setting))
    trace = np.asarray(result.activation[:, 0])
    assert float(result.final_activation[0]) > trace[0]
    x = np.asarray(result.z)
    assert x.min() >= -MEAN - 1e-3 and x.max() <= 255 - MEAN + 1e-3


def test_yosinski_progress_learning_rate():
    g = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 1)).astype(np.float32))
    updates, _ = U.progress_gradient_ascent(2.0, 1e8).update(-g, None)
    sq = np.sum(np.square(np.asarray(g)), axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(updates), (2.0 / sq)[:, None, None, None] * np.asarray(g), rtol=1e-5)
    capped, _ = U.progress_gradient_ascent(2.0, 1e-3).update(-g, None)
    np.testing.assert_allclose(np.asarray(capped), 1e-3 * np.asarray(g), rtol=1e-5)


def test_yosinski_table():
    assert [P.YOSINSKI_2015[i].iterations for i in (1, 2, 3, 4)] == [500, 750, 1000, 1000]
    preset = P.yosinski2015(3, (28, 28, 1))
    assert preset.method.steps == 999 and preset.param.init_std == 10.0
    with pytest.raises(ValueError, match="settings 1-4"):
        P.yosinski2015(5, (28, 28, 1))


# ----- Mahendran & Vedaldi, generator inversion ------------------------------------------------------------

def test_mahendran_vedaldi_reduces_feature_distance(net):
    yy, xx = np.mgrid[0:28, 0:28]
    x0 = jnp.asarray((80 * np.sin(yy / 4.0) * np.cos(xx / 5.0))[None, :, :, None], jnp.float32)
    ref = net.apply(net.params, x0, ("conv3",))["conv3"]
    preset = P.mahendran_vedaldi("conv3", ref, (28, 28, 1), steps=40)
    result = preset.visualize(net, key=jax.random.key(0))

    def dist(x):
        phi = net.apply(net.params, x, ("conv3",))["conv3"]
        return float(jnp.sum(jnp.square(phi - ref)) / jnp.sum(jnp.square(ref)))
    start = preset.param.init(jax.random.split(jax.random.key(0))[0], 1)
    assert dist(result.image) < 0.5 * dist(start)
    assert float(result.final_objective) > float(result.objective[0])


def test_mahendran_vedaldi_schedule_and_momentum_reset():
    assert P.mv_learning_rates(400, 0.004)[::100] == pytest.approx([0.004, 0.0004, 0.0004, 0.00004])
    opt = U.momentum_with_resets([1.0, 1.0, 0.5], momentum=0.9)
    z = jnp.zeros(3)
    state = opt.init(z)
    g = jnp.ones(3)
    u1, state = opt.update(g, state)
    u2, state = opt.update(g, state)
    u3, state = opt.update(g, state)
    np.testing.assert_allclose(np.asarray(u1), -1.0)
    np.testing.assert_allclose(np.asarray(u2), -1.9)   # m = 0.9 m - lr g
    np.testing.assert_allclose(np.asarray(u3), -0.5)   # lr switch: momentum restarts
    assert P.MV_LAMBDA_TV["conv1"] == 1 and P.MV_LAMBDA_TV["conv3"] == 10 and P.MV_LAMBDA_TV["fc8"] == 100


def test_generator_inversion(net, gen):
    x0 = jax.random.normal(jax.random.key(4), (3, 28, 28, 1)) * 50.0
    x = P.generator_inversion(net, gen, x0)
    assert x.shape == (3, 28, 28, 1)
    code = net.apply(net.params, x0, ("fc6",))["fc6"]
    expected = np.asarray(_image(net, gen, code))
    np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    with pytest.raises(ValueError, match="fc8"):
        P.generator_inversion(net, gen, x0, encoder_layer="fc8")


def test_preset_batch_runs_one_reference_per_run(net):
    yy, xx = np.mgrid[0:28, 0:28]
    x0 = np.stack([80 * np.sin(yy / 4.0) * np.cos(xx / 5.0), 80 * np.cos(yy / 3.0)])[:, None, :, :, None]
    refs = jnp.stack([net.apply(net.params, jnp.asarray(x, jnp.float32), ("conv3",))["conv3"] for x in x0])
    preset = P.mahendran_vedaldi("conv3", refs[0], (28, 28, 1), steps=20)
    result = preset.visualize_batch(net, keys=jax.random.split(jax.random.key(0), 2), targets=refs)
    assert result.image.shape == (2, 1, 28, 28, 1)
    assert np.all(np.asarray(result.final_objective) > np.asarray(result.objective[:, 0]))
