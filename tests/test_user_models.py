"""Your own network: Flax linen and NNX modules, an Equinox module and a plain function become Models that
visualize, sweep and the gallery read, with taps by module path and a clear error for a tap that is not there."""

from __future__ import annotations

import json

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxviz
from jaxviz import objectives as O
from jaxviz.models import preprocessing, shipped
from jaxviz.models.user import UnknownTapError
from jaxviz.workflows import sweep as sw

SHAPE = (28, 28, 1)


class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (5, 5), strides=2, name="conv")(x))
        self.sow("intermediates", "conv_relu", h)
        h = Block(name="block")(h.reshape(len(h), -1))
        return nn.Dense(10, name="logits")(h)


class Block(nn.Module):
    @nn.compact
    def __call__(self, h):
        return nn.relu(nn.Dense(16, name="dense")(h))


class TrainedNet(nn.Module):
    """The README's example network."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(8, (5, 5), strides=2, name="conv")(x))
        h = nn.relu(nn.Dense(64, name="hidden")(h.reshape(len(h), -1)))
        return nn.Dense(10, name="logits")(h)


class NnxNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(784, 16, rngs=rngs)
        self.logits = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.hidden(x.reshape(len(x), -1)))
        self.sow(nnx.Intermediate, "hidden_relu", h)
        return self.logits(h)


def equinox_net() -> eqx.nn.Sequential:
    k1, k2 = jax.random.split(jax.random.key(1))
    return eqx.nn.Sequential([eqx.nn.Lambda(lambda x: x.reshape(-1)), eqx.nn.Linear(784, 16, key=k1),
                              eqx.nn.Lambda(jax.nn.relu), eqx.nn.Linear(16, 10, key=k2)])


def function_net() -> tuple:
    rng = np.random.default_rng(0)
    params = {"w1": rng.normal(0, 0.05, (784, 16)).astype(np.float32), "w2": rng.normal(0, 0.3, (16, 10)).astype(np.float32)}

    def forward(p, x):
        hidden = jax.nn.relu(x.reshape(len(x), -1) @ p["w1"])
        return {"hidden": hidden, "logits": hidden @ p["w2"]}
    return forward, params


def all_models() -> dict[str, tuple[jaxviz.Model, str]]:
    """Each kind of user network with the tap of its 10 logits."""
    linen = LinenNet()
    forward, params = function_net()
    return {
        "flax": (jaxviz.from_flax(linen, linen.init(jax.random.key(0), jnp.zeros((1, *SHAPE))), SHAPE), "logits"),
        "nnx": (jaxviz.from_nnx(NnxNet(nnx.Rngs(0)), SHAPE), "logits"),
        "equinox": (jaxviz.from_equinox(equinox_net(), SHAPE), "layers[3]"),
        "function": (jaxviz.from_function(forward, params, SHAPE), "logits"),
    }


@pytest.fixture(scope="module")
def models():
    return all_models()


# ----- taps by module path, checked against the same arithmetic done by hand ------------------------------

def test_linen_taps_are_submodule_paths_and_sown_values(models):
    model, _ = models["flax"]
    assert model.tap_names == ("conv", "conv_relu", "block/dense", "block", "logits", "output")
    x = jax.random.normal(jax.random.key(3), (2, *SHAPE))
    acts = model(x, ("conv", "conv_relu", "block/dense", "block", "logits", "output"))
    p = model.params
    conv = jax.lax.conv_general_dilated(x, p["conv"]["kernel"], (2, 2), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["conv"]["bias"]
    np.testing.assert_allclose(acts["conv"], conv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(acts["conv_relu"], np.maximum(conv, 0), rtol=1e-5, atol=1e-5)
    dense = np.maximum(conv, 0).reshape(2, -1) @ p["block"]["dense"]["kernel"] + p["block"]["dense"]["bias"]
    np.testing.assert_allclose(acts["block/dense"], dense, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(acts["block"], np.maximum(dense, 0), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(acts["logits"], acts["output"])


def test_nnx_taps_are_method_outputs_and_sown_values(models):
    model, _ = models["nnx"]
    assert set(model.tap_names) == {"hidden", "hidden_relu", "logits", "output"}
    x = jax.random.normal(jax.random.key(4), (3, *SHAPE))
    acts = model(x)
    w, b = model.params["hidden"]["kernel"].get_value(), model.params["hidden"]["bias"].get_value()
    hidden = x.reshape(3, -1) @ w + b
    np.testing.assert_allclose(acts["hidden"], hidden, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(acts["hidden_relu"], np.maximum(hidden, 0), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(acts["logits"], acts["output"])


def test_equinox_sequential_taps_are_its_layers(models):
    model, _ = models["equinox"]
    assert model.tap_names == ("layers[0]", "layers[1]", "layers[2]", "layers[3]", "output")
    x = jax.random.normal(jax.random.key(5), (2, *SHAPE))
    acts = model(x)
    net = equinox_net()
    expected = jax.vmap(net)(x)  # Equinox's own call, one example at a time
    np.testing.assert_allclose(acts["output"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(acts["layers[2]"], np.maximum(acts["layers[1]"], 0))


def test_a_tap_that_does_not_exist_is_named_with_the_ones_that_do(models):
    model, _ = models["flax"]
    with pytest.raises(UnknownTapError, match=r"the network 'LinenNet' has no tap 'fc8'; its taps are: conv, "
                                              r"conv_relu, block/dense, block, logits, output"):
        model(jnp.zeros((1, *SHAPE)), ("fc8",))
    with pytest.raises(UnknownTapError, match="no tap 'fc8'"):
        jaxviz.visualize(model, O.unit("fc8", 3), steps=2)  # before anything compiles or runs
    with pytest.raises(UnknownTapError, match="no tap 'logit'"):
        jaxviz.from_function(lambda p, x: {"logits": x.reshape(len(x), -1)[:, :10]}, {}, SHAPE, class_layer="logit")


# ----- the same machinery on every kind ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["flax", "nnx", "equinox", "function"])
def test_visualize_raises_the_unit_and_scores_it(models, kind):
    model, logits = models[kind]
    x0 = np.zeros((1, *SHAPE), np.float32)
    start = float(model(x0, (logits,))[logits][0, 3])
    result = jaxviz.visualize(model, O.unit(logits, 3), steps=30)
    assert result.report.layer == logits and result.report.unit == 3
    assert result.report.activation > start  # random weights: it rises; the trained net below reaches rank 0
    trace = np.asarray(result.activation).ravel()
    assert trace[-1] > trace[0]
    picture = result.picture()  # no input space given: gray, stretched to its own range, never blank
    assert picture.shape == (28, 28) and picture.min() == 0 and picture.max() == 255


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["flax", "nnx", "equinox", "function"])
def test_a_sweep_and_its_gallery_run_on_every_kind(models, kind, tmp_path):
    model, logits = models[kind]
    config = sw.SweepConfig(logits, (0, 1, 2, 3), "pixel", steps=5, chunk_size=4)
    summary = sw.sweep(model, None, config, tmp_path / kind, progress=False)
    rows = [json.loads(line) for line in (summary.out_dir / "results.jsonl").read_text().splitlines()]
    assert [r["unit"] for r in rows] == [0, 1, 2, 3]
    assert len(list((summary.out_dir / "units").glob("*.png"))) == 4
    page = (summary.out_dir / "index.html").read_text()
    assert f"sweep of {logits}: 4 runs" in page
    again = sw.sweep(model, None, config, tmp_path / kind, progress=False)  # resumes: nothing to compute
    assert again.computed == 0


# ----- a network trained here, scored like the embedded pair -----------------------------------------------

@pytest.mark.slow
def test_a_trained_flax_network_is_scored_with_the_shipped_digits_and_judge():
    card = jaxviz.load("caffenet").preprocessing
    digits, labels = shipped.heldout_digits()
    x = preprocessing.to_network(digits, card)
    net, opt = TrainedNet(), optax.adam(1e-3)
    params = net.init(jax.random.key(0), x[:1])["params"]
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(net.apply({"params": p}, x), labels).mean()
        updates, state = opt.update(jax.grad(loss)(params), state)
        return optax.apply_updates(params, updates), state
    for _ in range(150):
        params, state = step(params, state)
    trained = np.asarray(net.apply({"params": params}, x)).argmax(1)
    assert (trained == labels).mean() > 0.9  # it learned its 100 digits
    mine = jaxviz.from_flax(net, params, SHAPE, preprocessing=card, class_layer="logits")
    result = jaxviz.visualize(mine, O.unit("logits", 3), steps=30)
    report = result.report
    assert report.rank == 0 and np.isfinite(report.percentile) and np.isfinite(report.path_score)
    assert report.judge_label is not None  # the class layer gets the independent classifier's opinion
