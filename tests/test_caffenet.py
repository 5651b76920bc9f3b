"""CaffeNet module: shapes per models.md, taps, early stop, small configs, dropout, input gradients."""

from __future__ import annotations

import dataclasses

import jax
from jax.extend.core import Literal
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz.models.caffenet import CaffeNet, CaffeNetConfig, ConvSpec, caffenet_tap_names, caffenet_tap_shapes

# models.md's CaffeNet table, C x H x W rewritten as NHWC per example.
MODELS_MD_SHAPES = {
    "conv1": (55, 55, 96), "pool1": (27, 27, 96), "norm1": (27, 27, 96),
    "conv2": (27, 27, 256), "pool2": (13, 13, 256), "norm2": (13, 13, 256),
    "conv3": (13, 13, 384), "conv4": (13, 13, 384), "conv5": (13, 13, 256), "pool5": (6, 6, 256),
    "fc6": (4096,), "fc7": (4096,), "fc8": (1000,), "prob": (1000,),
}
# Caffe blob shapes of models.md -> Flax kernel shapes (HWIO / (in, out)).
MODELS_MD_PARAMS = {
    "conv1": (11, 11, 3, 96), "conv2": (5, 5, 48, 256), "conv3": (3, 3, 256, 384), "conv4": (3, 3, 192, 384),
    "conv5": (3, 3, 192, 256), "fc6": (9216, 4096), "fc7": (4096, 4096), "fc8": (4096, 1000),
}
TINY = CaffeNetConfig(input_size=19, in_channels=3,
                      convs=(ConvSpec(4, 3, 2, 0, 1), ConvSpec(4, 3, 1, 1, 2), ConvSpec(6, 3, 1, 1, 1),
                             ConvSpec(6, 3, 1, 1, 2), ConvSpec(4, 3, 1, 1, 2)),
                      lrn_alpha=1e-2, fc=(8, 8, 5))


def numpy_params(net: CaffeNet, x, scale: float = 0.01, seed: int = 0):
    """Random N(0, scale) params shaped like ``net.init``'s, drawn by numpy: on XLA:CPU compiling the
    init's threefry draws takes ~0.7 s per parameter, which would dominate these small tests."""
    shapes = jax.eval_shape(net.init, jax.random.key(0), x)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: (rng.standard_normal(a.shape) * scale).astype(x.dtype), shapes)


@pytest.fixture(scope="module")
def full_net():
    net = CaffeNet()
    x = jax.random.normal(jax.random.key(0), (1, 227, 227, 3)) * 50.0
    params = jax.jit(net.init)(jax.random.key(1), x)
    return net, params, x


def test_full_caffenet_tap_shapes_match_models_md(full_net):
    net, params, x = full_net
    out = jax.jit(net.apply, static_argnums=2)(params, x, CaffeNet.tap_names())
    assert set(out) == set(CaffeNet.tap_names())
    for name, value in out.items():
        assert value.shape[1:] == MODELS_MD_SHAPES[name.removesuffix(":pre")], name
        assert value.dtype == jnp.float32
    assert {k: v["kernel"].shape for k, v in params["params"].items()} == MODELS_MD_PARAMS
    assert {k: v["bias"].shape for k, v in params["params"].items()} == {k: (v[-1],) for k, v in MODELS_MD_PARAMS.items()}
    assert caffenet_tap_shapes(CaffeNetConfig()) == {t: MODELS_MD_SHAPES[t.removesuffix(":pre")]
                                                     for t in caffenet_tap_names()}
    # In-place ReLU semantics: the blob is the rectified :pre value; prob is softmax(fc8).
    np.testing.assert_allclose(out["conv5"], jnp.maximum(out["conv5:pre"], 0))
    np.testing.assert_allclose(out["fc7"], jnp.maximum(out["fc7:pre"], 0))
    np.testing.assert_allclose(out["prob"], jax.nn.softmax(out["fc8"]), rtol=1e-5)
    assert float(out["conv1:pre"].min()) < 0 <= float(out["conv1"].min())


def _layers_used(net, params, x, taps) -> set[str]:
    """The layers whose parameters the traced forward pass reads (form-independent: however a layer lowers)."""
    jaxpr = jax.make_jaxpr(lambda p, v: net.apply(p, v, taps))(params, x)
    paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    read = {v for e in jaxpr.jaxpr.eqns for v in e.invars if not isinstance(v, Literal)}
    read |= set(jaxpr.jaxpr.outvars)
    layers = set()
    for path, var in zip(paths, jaxpr.jaxpr.invars):
        if var in read:
            layers.add(path.split("'")[3])  # ['params']['conv1']['kernel'] -> conv1
    return layers


def test_stops_at_deepest_tap(full_net):
    net, params, x = full_net
    convs = {"conv1", "conv2", "conv3", "conv4", "conv5"}
    assert _layers_used(net, params, x, ("prob",)) == convs | {"fc6", "fc7", "fc8"}
    assert _layers_used(net, params, x, ("norm1",)) == {"conv1"}
    assert _layers_used(net, params, x, ("conv5",)) == convs
    assert _layers_used(net, params, x, ("conv5:pre", "pool1")) == convs
    assert _layers_used(net, params, x, ("fc6:pre",)) == convs | {"fc6"}
    assert _layers_used(net, params, x, ("fc8", "conv2")) == convs | {"fc6", "fc7", "fc8"}
    # A params tree without fc6..fc8 (or its first layers only) is enough for conv taps.
    conv_only = {"params": {k: v for k, v in params["params"].items() if k.startswith("conv")}}
    out = net.apply(conv_only, x, ("conv5", "pool1"))
    assert set(out) == {"conv5", "pool1"}
    with pytest.raises(Exception):
        net.apply(conv_only, x, ("pool5", "fc6"))


def test_unknown_tap_is_named_with_valid_list():
    x = jnp.zeros((1, 19, 19, 3))
    with pytest.raises(ValueError) as err:
        CaffeNet(TINY).init(jax.random.key(0), x, ("conv6",))
    msg = str(err.value)
    assert "'conv6'" in msg and "conv5:pre" in msg and "prob" in msg
    with pytest.raises(ValueError, match="fc8:pre"):
        CaffeNet(TINY).init(jax.random.key(0), x, ("fc8:pre",))


def test_single_string_tap_is_one_tap():
    net = CaffeNet(TINY)
    params = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 19, 19, 3)))
    out = jax.eval_shape(lambda p, x: net.apply(p, x, "fc8"), params, jnp.ones((1, 19, 19, 3)))
    assert set(out) == {"fc8"}


def test_mnist_config_and_dropout():
    cfg = CaffeNetConfig.mnist()
    net = CaffeNet(cfg)
    x = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
    params = numpy_params(net, x)
    apply = jax.jit(net.apply, static_argnums=2, static_argnames="deterministic")
    out = apply(params, x, CaffeNet.tap_names(cfg))
    for name, shape in caffenet_tap_shapes(cfg).items():
        assert out[name].shape == (4, *shape), name
    assert out["prob"].shape == (4, 10)
    # Dropout only when asked for, and then fc6/fc7 hold the dropped-out, rescaled value (in place in Caffe).
    det = apply(params, x, ("fc6:pre", "fc6", "fc8"), deterministic=True)
    np.testing.assert_allclose(det["fc8"], out["fc8"], rtol=1e-6)
    train = apply(params, x, ("fc6:pre", "fc6", "fc8"), deterministic=False, rngs={"dropout": jax.random.key(2)})
    relu = np.maximum(np.asarray(train["fc6:pre"]), 0)
    kept = np.asarray(train["fc6"]) != 0
    assert 0.3 < kept[relu > 0].mean() < 0.7
    np.testing.assert_allclose(np.asarray(train["fc6"])[kept], 2 * relu[kept], rtol=1e-5)
    assert not np.allclose(train["fc8"], det["fc8"])


def test_config_is_hashable_and_round_trips():
    cfg = CaffeNetConfig()
    assert hash(cfg) == hash(CaffeNetConfig())
    assert CaffeNetConfig.from_dict(cfg.to_dict()) == cfg
    assert CaffeNetConfig(convs=[list(c) for c in cfg.convs]) == cfg  # plain lists, e.g. from JSON
    assert cfg.num_classes == 1000
    {cfg: 1, CaffeNetConfig.mnist(): 2}


@pytest.mark.parametrize("change,match", [
    (dict(convs=((96, 11, 4, 0, 1), (256, 5, 1, 2, 3), (384, 3, 1, 1, 1), (384, 3, 1, 1, 2), (256, 3, 1, 1, 2))),
     "conv2.*group=3"),
    (dict(convs=((96, 11, 4, 0, 2), (256, 5, 1, 2, 2), (384, 3, 1, 1, 1), (384, 3, 1, 1, 2), (256, 3, 1, 1, 2))),
     "conv1.*3 input"),
    (dict(input_size=28), "pool5"),
    (dict(fc=(10, 10)), "3 fc widths"),
])
def test_config_validation(change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(CaffeNetConfig(), **change)


def test_input_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        net = CaffeNet(TINY)
        x = jax.random.normal(jax.random.key(0), (1, 19, 19, 3), jnp.float64) * 30.0
        # Larger than the init's N(0, 0.01) so LRN, ReLU and pooling all act on the signal.
        params = numpy_params(net, x, scale=0.4)

        @jax.jit
        def objective(x):
            out = net.apply(params, x, ("fc8", "conv3:pre"))
            return out["fc8"][0, 2] + 0.1 * out["conv3:pre"][0, 1, 2, 3]

        grad = jax.jit(jax.grad(objective))(x)
        assert float(jnp.abs(grad).max()) > 0
        for seed in range(3):
            d = jax.random.normal(jax.random.key(10 + seed), x.shape, jnp.float64)
            eps = 1e-4
            fd = (objective(x + eps * d) - objective(x - eps * d)) / (2 * eps)
            np.testing.assert_allclose(float(jnp.vdot(grad, d)), float(fd), rtol=1e-5)
