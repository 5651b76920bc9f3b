"""The optimization loop: batched runs equal single runs, activations rise, bad input and NaNs are handled."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz.core import objectives as O
from jaxviz.models import CaffeNet, CaffeNetConfig
from jaxviz.models.caffenet import ConvSpec
from jaxviz.models.model import Model
from jaxviz.core.loop import Method
from jaxviz.core.updates import gradient_ascent, normalized_gradient_ascent
from jaxviz.core.params import Pixels
from jaxviz.core.run import OptimizationFailed, unit_keys
from jaxviz.core.run import optimize as visualize, optimize_batch as visualize_batch
from tests.helpers.jaxprs import primitive_names

SMALL = CaffeNetConfig(input_size=28, in_channels=1,
                       convs=(ConvSpec(8, 5, 1, 2, 1), ConvSpec(8, 5, 1, 2, 2), ConvSpec(8, 3, 1, 1, 1),
                              ConvSpec(8, 3, 1, 1, 2), ConvSpec(8, 3, 1, 1, 2)),
                       fc=(32, 32, 10))


@pytest.fixture(scope="module")
def net() -> Model:
    """A small random CaffeNet with weights large enough for visible activations."""
    module = CaffeNet(SMALL)
    params = module.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), ("prob",))["params"]
    params = jax.tree_util.tree_map(lambda p: p * 10.0 if p.ndim > 1 else p, params)
    return Model("caffenet", module, params, {})


METHOD = Method(12, normalized_gradient_ascent(2.0))


def test_batch_of_eight_units_equals_eight_single_runs(net):
    targets, keys = unit_keys(0, range(8))
    batch = visualize_batch(net, O.unit("fc8"), keys=keys, targets=targets, method=METHOD)
    for i in range(8):
        single = visualize(net, O.unit("fc8"), key=keys[i], target=int(targets[i]), method=METHOD)
        # Batched and single programs may fuse float sums differently: compare relatively.
        scale = float(jnp.abs(single.image).max())
        np.testing.assert_allclose(batch.image[i], single.image, atol=1e-4 * scale)
        np.testing.assert_allclose(batch.final_activation[i], single.final_activation, rtol=1e-3)


def test_target_activation_rises(net):
    result = visualize(net, O.unit("fc8", 4), method=METHOD, key=jax.random.key(3))
    trace = np.asarray(result.activation[:, 0])
    assert trace[-1] > trace[0]
    assert float(result.final_activation[0]) > trace[0]
    assert result.failed_step == -1


def test_best_image_has_the_best_objective(net):
    result = visualize(net, O.unit("fc8", 1), method=METHOD)
    assert float(result.best_objective) >= float(np.nanmax(np.asarray(result.objective)))


def test_unknown_layer_is_named(net):
    with pytest.raises(ValueError, match="fc9"):
        visualize(net, O.unit("fc9", 0), method=METHOD)


def test_unit_out_of_range_is_named(net):
    with pytest.raises(IndexError, match="unit 10 is out of range for layer 'fc8'"):
        visualize(net, O.unit("fc8", 10), method=METHOD)
    with pytest.raises(IndexError, match="unit 12"):
        visualize_batch(net, O.unit("fc8"), targets=jnp.array([1, 12]), keys=jax.random.split(jax.random.key(0), 2),
                        method=METHOD)


def test_image_shape_mismatch_is_named(net):
    with pytest.raises(ValueError, match=r"\(32, 32, 1\).*\(28, 28, 1\)"):
        visualize(net, O.unit("fc8", 0), Pixels((32, 32, 1)), method=METHOD)


def test_nan_stops_only_its_own_run(net):
    # sqrt(limit - a) turns NaN once the activation passes the limit; only target 2 has a reachable limit.
    base = O.unit("fc8")

    def fn(acts, target):
        a = base(acts, target)
        limit = jnp.where(target == 2, 1e-3, 1e30)
        return a + 1e-6 * jnp.sqrt(limit - a)

    objective = O.Objective(fn, base.taps, "nan-prone", "fc8", "center", None)
    targets = jnp.array([1, 2, 3])
    keys = jax.random.split(jax.random.key(0), 3)
    with pytest.warns(OptimizationFailed, match="run 1 at step"):
        result = visualize_batch(net, objective, keys=keys, targets=targets, method=METHOD)
    failed = np.asarray(result.failed_step)
    assert failed[1] >= 0 and failed[0] == -1 and failed[2] == -1
    assert np.all(np.isfinite(np.asarray(result.image)))
    assert np.all(np.isnan(np.asarray(result.objective[1, failed[1]:])))
    clean = visualize_batch(net, base, keys=keys, targets=targets, method=METHOD)
    np.testing.assert_allclose(result.image[0], clean.image[0], rtol=1e-4, atol=1e-3)


def test_log_softmax_gradient_is_the_exact_formula(net):
    """d log s_c / dx = d a_c/dx - sum_j s_j d a_j/dx (survey seed Table 1c)."""
    x = jax.random.normal(jax.random.key(5), (1, 28, 28, 1)) * 30
    logits = lambda x: net.apply(net.params, x, ("fc8",))["fc8"][0]
    c = 7
    ours = jax.jit(jax.grad(lambda x: O.log_softmax("fc8", c)({"fc8": net.apply(net.params, x, ("fc8",))["fc8"]})))(x)
    jac = jax.jit(jax.jacrev(logits))(x)              # (10, 1, 28, 28, 1)
    s = jax.nn.softmax(logits(x))
    expected = jac[c] - jnp.tensordot(s, jac, axes=1)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6 * float(jnp.abs(expected).max()))


def test_objective_algebra():
    acts = {"fc8": jnp.array([[1.0, 2.0, 3.0]])}
    combo = O.unit("fc8", 2) - 0.5 * O.unit("fc8", 0) + 1.0
    assert float(combo(acts)) == pytest.approx(3.0 - 0.5 + 1.0)
    assert float((-O.unit("fc8", 1))(acts)) == -2.0
    assert float((O.unit("fc8", 1) / 4)(acts)) == 0.5
    assert float(O.unit("fc8")(acts, 1)) == 2.0          # index from the target
    # "maximize A while minimizing B" ranks A, the one unit term that is maximized ...
    assert (combo.unit_layer, combo.unit_index) == ("fc8", 2)
    # ... and two maximized unit terms leave no single unit whose rank a result could report.
    assert (O.unit("fc8", 2) + O.unit("fc8", 0)).unit_layer is None


def test_scan_and_host_loops_give_the_same_runs(net):
    import dataclasses

    targets, keys = unit_keys(1, range(3))
    results = [visualize_batch(net, O.unit("fc8"), keys=keys, targets=targets,
                               method=dataclasses.replace(METHOD, loop=loop)) for loop in ("scan", "host")]
    for a, b in zip(*results):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-4, atol=1e-4)


def _count_compilations(monkeypatch) -> list:
    from jaxviz.core import loop

    built = []
    original = loop._compile_run

    def spy(*args):
        built.append(original(*args))
        return built[-1]
    loop._COMPILED.clear()
    monkeypatch.setattr(loop, "_compile_run", spy)
    return built


def test_equal_setups_built_twice_share_one_compilation(net, monkeypatch):
    from jaxviz.core import operators

    built = _count_compilations(monkeypatch)
    targets, keys = unit_keys(2, range(3))

    def setup():
        # Every piece built afresh: new closures, new optax transforms, new operator chains.
        method = Method(3, normalized_gradient_ascent(2.0), operators.chain(operators.decay(0.1),
                                                                              operators.clip_value(-50.0, 50.0)))
        return O.unit("fc8") - 1e-3 * O.unit("fc7", 0), Pixels((28, 28, 1)), method
    first, second = (visualize_batch(net, obj, param, keys=keys, targets=targets, method=method)
                     for obj, param, method in (setup(), setup()))
    assert len(built) == 1 and built[0].compilations() == 1
    np.testing.assert_array_equal(np.asarray(first.image), np.asarray(second.image))


def test_setups_that_differ_in_a_value_compile_apart(net, monkeypatch):
    built = _count_compilations(monkeypatch)
    targets, keys = unit_keys(2, range(2))
    for lr in (1.0, 1.0, 2.0):
        visualize_batch(net, O.unit("fc8"), keys=keys, targets=targets, method=Method(2, gradient_ascent(lr)))
    for layer in ("fc8", "fc7"):
        visualize_batch(net, O.unit(layer), keys=keys, targets=targets, method=Method(2, gradient_ascent(1.0)))
    assert len(built) == 3  # lr 1 (twice, shared with fc8 below), lr 2, and fc7


class _GatedNet:
    """One ReLU unit over a 2x2 image, off at the start: ``relu(sum(x) - 8)``, two hidden ReLUs before it."""

    input_shape = (2, 2, 1)
    params = None

    @staticmethod
    def function(params, x, taps):
        from jaxviz.models import layers
        hidden = layers.leaky_relu(jnp.stack([x.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3))], -1) - 4.0)
        return {"y": layers.leaky_relu(hidden.sum(-1, keepdims=True) - 8.0)}


@pytest.mark.parametrize("loop", ["scan", "host"])
def test_redirected_relu_steps_start_a_run_whose_gradient_is_zero(loop):
    import dataclasses

    method = Method(10, gradient_ascent(0.5), stop_on_zero_grad=True, loop=loop)
    start = jnp.zeros((1, 2, 2, 1))
    plain = visualize(_GatedNet(), O.unit("y", 0), method=method, z0=start)
    assert int(plain.stopped_step) == 0 and float(plain.final_activation[0]) == 0.0   # nothing gets through
    # Redirected for 4 updates: each raises every pixel by 0.5 * 2 (both hidden paths), the sum s by 4, so
    # the hidden units fire at step 2 (s = 8, the output's input exactly 0) and the output at step 3
    # (s = 12: 2 * 8 - 8); from there the true gradient carries it on, the output rising 2 * 4 per step.
    early = visualize(_GatedNet(), O.unit("y", 0), method=dataclasses.replace(method, redirected_relu_steps=4),
                      z0=start)
    assert int(early.stopped_step) == -1
    trace = np.asarray(early.activation[:, 0])
    np.testing.assert_allclose(trace, [0, 0, 0, 8, 16, 24, 32, 40, 48, 56], atol=1e-5)
    np.testing.assert_allclose(float(early.final_activation[0]), 64.0, rtol=1e-6)
    # Only the first steps are redirected: from a start where the unit fires, the runs are the same.
    on = jnp.full((1, 2, 2, 1), 5.0)
    a = visualize(_GatedNet(), O.unit("y", 0), method=method, z0=on)
    b = visualize(_GatedNet(), O.unit("y", 0), method=dataclasses.replace(method, redirected_relu_steps=4), z0=on)
    np.testing.assert_allclose(np.asarray(a.activation), np.asarray(b.activation))


def test_redirected_relu_steps_must_not_be_negative():
    import dataclasses

    with pytest.raises(ValueError, match="redirected_relu_steps must be >= 0"):
        visualize(_GatedNet(), O.unit("y", 0), method=dataclasses.replace(METHOD, redirected_relu_steps=-1))


def _plain_leaves(tree) -> list[np.ndarray]:
    as_data = lambda a: jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a
    return [np.asarray(as_data(a)) for a in jax.tree_util.tree_leaves(tree)]


def test_initial_state_and_result_compiled_for_speed_of_compilation_equal_the_default_compilation(net):
    # A run's initial state and result compile for speed of compiling on CPU (run_once_options: LLVM
    # level 1, XLA's older loop emitter): they must hold the same values as the default compilation, for
    # a Fourier image's random spectrum and every step's transform values as for pixels.
    import dataclasses

    from jaxviz.core.fourier import FourierImage
    from jaxviz.core.loop import compiled_parts, run_once_options, run_parts
    from jaxviz.core.transforms import standard_transforms
    targets, keys = unit_keys(0, range(3))
    transformed = dataclasses.replace(METHOD, transform=standard_transforms())
    for param, method in ((FourierImage(28, 28, 1), transformed), (Pixels((28, 28, 1)), METHOD)):
        fast = compiled_parts(net.function, O.unit("fc8"), param, method, True, False)
        parts = run_parts(net.function, O.unit("fc8"), param, method)
        default_init = jax.jit(jax.vmap(parts.init, (None, None, 0, 0)))
        carry = fast.init(net.params, None, targets, keys)
        for a, b in zip(_plain_leaves(carry), _plain_leaves(default_init(net.params, None, targets, keys))):
            np.testing.assert_array_equal(a, b)
        default_finish = jax.jit(jax.vmap(parts.finish, (None, None, 0, 0)))
        for a, b in zip(_plain_leaves(fast.finish(net.params, None, targets, carry)),
                        _plain_leaves(default_finish(net.params, None, targets, carry))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    once = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
            "xla_backend_optimization_level": 1, "xla_cpu_use_fusion_emitters": False}
    assert run_once_options() == (once if jax.default_backend() == "cpu" else {})


def test_an_option_this_xla_does_not_know_is_left_out():
    from jaxviz.core.loop import known_options
    assert known_options({"xla_backend_optimization_level": 1, "xla_no_such_option": True}) == {
        "xla_backend_optimization_level": 1}


def test_every_steps_transform_values_are_drawn_at_the_start_and_the_step_hashes_nothing(net):
    """XLA:CPU compiles each hash of a step as kernels of its own, so a run draws every step's transform
    values in its initial state: the step, compiled for speed of running, draws nothing. Each step still
    gets its own values, those its key gives (``step_keys``)."""
    import dataclasses

    from jaxviz.core.loop import run_parts, step_keys
    from jaxviz.core.transforms import draw, standard_transforms
    method = dataclasses.replace(METHOD, steps=5, transform=standard_transforms())
    parts = run_parts(net.function, O.unit("fc8"), Pixels((28, 28, 1), init_std=0.1), method)
    carry = jax.jit(parts.init)(net.params, None, jnp.int32(3), jax.random.key(7))
    random = {"random_bits", "random_split", "random_fold_in", "random_seed", "threefry2x32"}
    assert not random & set(primitive_names(parts.step, net.params, None, jnp.int32(3), carry, jnp.int32(2)))
    assert "random_bits" in primitive_names(parts.init, net.params, None, jnp.int32(3), jax.random.key(7))
    matrices, offsets = carry.transform_draws
    assert matrices.shape == (5, 1, 2, 2) and offsets.shape == (5, 1, 2)
    assert len({tuple(np.asarray(o).ravel()) for o in offsets}) > 1   # not one draw for every step
    step_draw = jax.jit(lambda loop_key, i: draw(method.transform, step_keys(loop_key, i)[0], 1))
    for i in range(5):
        want = step_draw(carry.loop_key, jnp.int32(i))
        np.testing.assert_allclose(matrices[i], want[0], rtol=1e-6)
        np.testing.assert_allclose(offsets[i], want[1], rtol=1e-6, atol=1e-6)
    # and the run goes on from them: a step with the transform is not the step without it
    plain = run_parts(net.function, O.unit("fc8"), Pixels((28, 28, 1), init_std=0.1),
                      dataclasses.replace(method, transform=None))
    moved = jax.jit(parts.step)(net.params, None, jnp.int32(3), carry, jnp.int32(0)).z
    unmoved = jax.jit(plain.step)(net.params, None, jnp.int32(3), carry._replace(transform_draws=None),
                                  jnp.int32(0)).z
    assert not np.allclose(moved, unmoved)


def test_step_compiled_with_eigen_convolutions_equals_the_default_compilation(net):
    # A run's step compiles its convolutions with Eigen on CPU (step_options): the same update as the
    # default compilation up to float rounding, for pixels and a Fourier image, and the whole run too.
    from jaxviz.core.fourier import FourierImage
    from jaxviz.core.loop import compiled_parts, run_parts, step_options
    targets, keys = unit_keys(0, range(3))
    for param in (FourierImage(28, 28, 1), Pixels((28, 28, 1))):
        fast = compiled_parts(net.function, O.unit("fc8"), param, METHOD, True, False)
        parts = run_parts(net.function, O.unit("fc8"), param, METHOD)
        default_step = jax.jit(jax.vmap(parts.step, (None, None, 0, 0, None)))
        carry = fast.init(net.params, None, targets, keys)
        for i in range(3):
            got = fast.step(net.params, None, targets, carry, jnp.int32(i))
            want = default_step(net.params, None, targets, carry, jnp.int32(i))
            np.testing.assert_allclose(np.asarray(got.z), np.asarray(want.z), rtol=1e-4, atol=1e-5)
            carry = got
    eigen = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
    assert step_options() == (eigen if jax.default_backend() == "cpu" else {})


def test_the_result_program_is_traced_in_plain_forms_and_the_step_in_the_fast_ones(net):
    """A run's result program runs once: its render and network are traced in the layers' plainest forms
    (``core.plain_forms``), which compile in about half the time; the step, run every iteration, keeps
    the fast forms. The result is the same to float rounding."""
    from jaxviz.core.loop import run_parts
    from jaxviz.core.plain_forms import in_plain_forms

    seen = {"render": [], "network": []}

    class Recording(Pixels):
        def render(self, aux_params, z):
            seen["render"].append(in_plain_forms())
            return super().render(aux_params, z)

    def network(params, x, taps):
        seen["network"].append(in_plain_forms())
        return net.function(params, x, taps)

    parts = run_parts(network, O.unit("fc8"), Recording((28, 28, 1), init_std=0.1), METHOD)
    carry = parts.init(net.params, None, jnp.int32(3), jax.random.key(0))
    jax.make_jaxpr(parts.step)(net.params, None, jnp.int32(3), carry, jnp.int32(0))
    assert seen == {"render": [False], "network": [False]}
    seen = {"render": [], "network": []}
    jax.make_jaxpr(parts.finish)(net.params, None, jnp.int32(3), carry)
    assert seen == {"render": [True], "network": [True]}
    # the final judgement in plain forms agrees with the network's own forward pass
    result = parts.finish(net.params, None, jnp.int32(3), carry)
    fc8 = net.function(net.params, result.image, ("fc8",))["fc8"]
    np.testing.assert_allclose(result.final_activation, fc8[0, 3], rtol=1e-5)


def test_the_result_renders_both_images_through_one_traced_render(net):
    """The result program renders the last and the best code in one loop: the renderer (for DGN-AM, the
    whole generator) is traced and compiled once, not twice; and each image is the render of its code."""
    from jaxviz.core.loop import run_parts

    traced = []

    class Doubling(Pixels):
        def render(self, aux_params, z):
            traced.append(z.shape)
            return 2.0 * z

    param = Doubling((28, 28, 1), init_std=0.1)
    parts = run_parts(net.function, O.unit("fc8"), param, METHOD)
    carry = parts.init(net.params, None, jnp.int32(3), jax.random.key(0))
    carry = parts.step(net.params, None, jnp.int32(3), carry, jnp.int32(0))
    carry = carry._replace(best_z=carry.best_z + 1.0, best_objective=jnp.float32(1e30))  # a best that stays
    traced.clear()
    jax.make_jaxpr(parts.finish)(net.params, None, jnp.int32(3), carry)
    assert traced == [(1, 28, 28, 1)]
    result = parts.finish(net.params, None, jnp.int32(3), carry)
    np.testing.assert_array_equal(result.image, 2.0 * carry.z)
    np.testing.assert_array_equal(result.best_image, 2.0 * carry.best_z)
    np.testing.assert_array_equal(result.best_z, carry.best_z)
    # and when the last image beats every earlier one, it is the best image too
    result = parts.finish(net.params, None, jnp.int32(3), carry._replace(best_objective=jnp.float32(-1e30)))
    np.testing.assert_array_equal(result.best_image, 2.0 * carry.z)
    np.testing.assert_array_equal(result.best_z, carry.z)
