"""DeconvNet, saliency and guided backprop (``jaxviz.lenses.project``) against independent references:
the transposed conv1 filters applied by hand, max-pool switches known by construction, and a two-layer
ReLU net whose three backward passes are written out in numpy; plus the ``project`` verb."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxviz import cli, lenses, models
from jaxviz.models import layers
from jaxviz.models import preprocessing as pp
from jaxviz.models import shipped
from weights_convert.network.build import build_network
from weights_convert.prototxt import parse_prototxt


@dataclasses.dataclass(frozen=True)
class TinyNet:
    """Anything with a pure function, params and an input shape is a network to the lenses."""

    function: Callable
    params: Any
    input_shape: tuple
    preprocessing: dict = dataclasses.field(default_factory=dict)


@pytest.fixture(scope="module")
def caffenet():
    return models.load("caffenet")


@pytest.fixture(scope="module")
def digit(caffenet):
    images, _ = shipped.reference_digits()
    return pp.to_network(images[:1], caffenet.preprocessing)[0]


# ----- through conv1: the DeconvNet is the transposed (flipped) filter -------------------------------------

def transposed_filter_response(signal: np.ndarray, kernel: np.ndarray, pad: int) -> np.ndarray:
    """sum over output positions of signal[o] * W[:, :, :, unit] placed at the input window of o (stride 1)."""
    h, w, c_out = signal.shape
    kh, kw, c_in, _ = kernel.shape
    out = np.zeros((h + kh - 1, w + kw - 1, c_in))
    for i in range(kh):
        for j in range(kw):
            out[i:i + h, j:j + w] += np.einsum("hwo,co->hwc", signal, kernel[i, j])
    return out[pad:pad + h, pad:pad + w]


@pytest.mark.parametrize("keep", ["map", "max"])
def test_deconvnet_through_conv1_is_the_transposed_filter_response(caffenet, digit, keep):
    unit = 7
    act = np.asarray(caffenet(jnp.asarray(digit[None]), ("conv1",))["conv1"])[0]
    signal = np.zeros_like(act)
    if keep == "map":
        signal[..., unit] = act[..., unit]
    else:
        r, c = np.unravel_index(np.argmax(act[..., unit]), act.shape[:2])
        signal[r, c, unit] = act[r, c, unit]
    assert np.count_nonzero(signal) >= 1 and signal.max() > 0
    kernel = np.asarray(caffenet.params["conv1"]["kernel"], np.float64)
    expected = transposed_filter_response(signal.astype(np.float64), kernel, pad=2)
    got = np.asarray(lenses.project(caffenet, digit, "conv1", unit, "deconvnet", keep))[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    # and the same from JAX's own transposed convolution of the flipped kernel
    flipped = jnp.asarray(kernel[::-1, ::-1], jnp.float32)
    ref = jax.lax.conv_transpose(jnp.asarray(signal[None]), flipped, (1, 1), "SAME",
                                 dimension_numbers=("NHWC", "HWOI", "NHWC"), transpose_kernel=False)
    np.testing.assert_allclose(got, np.asarray(ref)[0], rtol=1e-4, atol=1e-5 * np.abs(expected).max())


# ----- through a max pool: only the switches carry the signal ------------------------------------------------

def pool_relu(params, x, taps):
    return {"pool": layers.leaky_relu(layers.max_pool(x, (2, 2), (2, 2)))}


def test_max_pool_passes_the_signal_only_through_its_switches():
    x = np.array([[1, 2, 9, 3],
                  [4, 3, 1, 0],
                  [0, 5, 2, 2],
                  [1, 1, 8, 7]], np.float32)[None, :, :, None] + 0.1
    switches = np.zeros((4, 4), bool)
    switches[[1, 0, 2, 3], [0, 2, 1, 2]] = True          # the max of each 2x2 window: 4, 9, 5, 8
    net = TinyNet(pool_relu, {}, (4, 4, 1))
    for rule in lenses.RULES:
        got = np.asarray(lenses.project(net, x[0], "pool", 0, rule))[0, ..., 0]
        assert np.array_equal(got != 0, switches), rule
        np.testing.assert_allclose(got[switches], x[0, ..., 0][switches])   # the pooled value, sent back
    got = np.asarray(lenses.project(net, x[0], "pool", 0, "deconvnet", keep="max"))[0, ..., 0]
    assert np.count_nonzero(got) == 1 and got[0, 2] == pytest.approx(9.1)
    got = np.asarray(lenses.project(net, x[0], "pool", 0, "guided", keep=(1, 1)))[0, ..., 0]
    assert np.count_nonzero(got) == 1 and got[3, 2] == pytest.approx(8.1)


# ----- a two-layer ReLU net written out by hand ----------------------------------------------------------------

W1 = np.array([[1.0, -2.0, 0.5],
               [0.5, 1.0, -1.0]], np.float32)      # 2 inputs -> 3 hidden
W2 = np.array([[1.0, -1.0],
               [2.0, 1.0],
               [-1.0, 0.5]], np.float32)           # 3 hidden -> 2 outputs


def two_layer(params, x, taps):
    h = layers.leaky_relu(x.reshape(x.shape[0], -1) @ params["w1"])
    return {"y": layers.leaky_relu(h @ params["w2"])}


def hand_backward(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, unit: int, rule: str) -> np.ndarray:
    """The three rules' backward passes, written out: seed the unit's value, then back through each layer."""
    h_pre = x @ w1
    h = np.maximum(h_pre, 0)
    y_pre = h @ w2
    y = np.maximum(y_pre, 0)
    g = np.zeros_like(y)
    g[unit] = y[unit]

    def through_relu(g, pre):
        if rule == "gradient":
            return g * (pre > 0)
        if rule == "deconvnet":
            return np.maximum(g, 0)
        return g * (pre > 0) * (g > 0)

    g = through_relu(g, y_pre) @ w2.T
    return through_relu(g, h_pre) @ w1.T


def test_the_three_rules_match_their_hand_written_backward_passes():
    # h_pre = (2.25, -3.5, 0.5), y_pre = (1.75, -2); unit 0's signal at the hidden layer: (1.75, 3.5, -1.75),
    # so gradient (1.75, 0, -1.75), deconvnet (1.75, 3.5, 0), guided (1.75, 0, 0) before W1^T
    x = np.array([2.0, 0.5], np.float32)
    net = TinyNet(two_layer, {"w1": jnp.asarray(W1), "w2": jnp.asarray(W2)}, (1, 2, 1))
    got = {rule: np.asarray(lenses.project(net, x.reshape(1, 2, 1), "y", 0, rule))[0].ravel() for rule in lenses.RULES}
    for rule in lenses.RULES:
        np.testing.assert_allclose(got[rule], hand_backward(x, W1, W2, 0, rule), rtol=1e-6, err_msg=rule)
    # the case separates the rules: a negative hidden unit gets signal only under the DeconvNet, and a
    # negative backward signal through an active unit is dropped only by guided backprop
    assert not np.allclose(got["gradient"], got["deconvnet"])
    assert not np.allclose(got["gradient"], got["guided"])
    assert not np.allclose(got["deconvnet"], got["guided"])
    # the gradient rule is the true vjp of the plain network (no rule set)
    y, back = jax.vjp(lambda a: two_layer(net.params, a, ("y",))["y"], jnp.asarray(x.reshape(1, 1, 2, 1)))
    seed = jnp.zeros_like(y).at[0, 0].set(y[0, 0])
    np.testing.assert_allclose(got["gradient"], np.asarray(back(seed)[0]).ravel(), rtol=1e-6)


def test_the_three_rules_agree_where_every_relu_is_active():
    w1, w2 = np.abs(W1) + 0.1, np.abs(W2) + 0.1
    net = TinyNet(two_layer, {"w1": jnp.asarray(w1), "w2": jnp.asarray(w2)}, (1, 2, 1))
    x = np.array([0.7, 1.3], np.float32).reshape(1, 2, 1)
    got = [np.asarray(lenses.project(net, x, "y", [0, 1], rule)) for rule in lenses.RULES]
    assert np.abs(got[0]).min() > 0
    np.testing.assert_allclose(got[1], got[0], rtol=1e-6)
    np.testing.assert_allclose(got[2], got[0], rtol=1e-6)
    np.testing.assert_allclose(got[0][1].ravel(), hand_backward(x.ravel(), w1, w2, 1, "gradient"), rtol=1e-6)


def test_a_compiled_function_is_retraced_under_another_rule():
    grad = jax.jit(jax.grad(lambda x: layers.leaky_relu(x).sum()))
    x = jnp.array([-1.0, 2.0])
    assert grad(x).tolist() == [0.0, 1.0]
    with layers.relu_backward("deconvnet"):
        assert grad(x).tolist() == [1.0, 1.0]     # the ReLU ignores the forward mask: not the cached program
    assert grad(x).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="unknown ReLU backward rule"):
        layers.relu_backward("zeiler")


# ----- the redirected rule (Lucid's redirected ReLU gradient) --------------------------------------------------

R1 = np.eye(2, dtype=np.float32)                       # hidden pre-activation: x - 1 per unit
R_B1 = np.array([-1.0, -1.0], np.float32)
R_W2 = np.array([1.0, 2.0], np.float32)                # output pre-activation: h . (1, 2) - 0.5
R_B2 = np.float32(-0.5)


def redirect_net(x: jax.Array) -> jax.Array:
    """relu(w2 . relu(x + b1) + b2) per example of a (batch, 2) input: two ReLU layers."""
    h = layers.leaky_relu(x @ R1 + R_B1)
    return layers.leaky_relu(h @ R_W2 + R_B2)


def redirected_grad(x: np.ndarray) -> np.ndarray:
    with layers.relu_backward("redirected"):
        return np.asarray(jax.grad(lambda a: redirect_net(a).sum())(jnp.asarray(x)))


def test_redirected_rule_moves_a_net_whose_gradient_is_zero_toward_firing():
    # At x = 0 every ReLU is off: the gradient is exactly zero. Redirected, the output's signal 1 passes its
    # ReLU (it pushes up), reaches the hidden layer as w2 = (1, 2) > 0, passes those ReLUs too, and arrives
    # as W1^T w2 = (1, 2). One unit step along it: hidden (0, 1), output 2 - 0.5 = 1.5 > 0.
    x = np.zeros((1, 2), np.float32)
    assert np.all(np.asarray(jax.grad(lambda a: redirect_net(a).sum())(jnp.asarray(x))) == 0)
    g = redirected_grad(x)
    np.testing.assert_allclose(g, [[1.0, 2.0]])
    assert float(redirect_net(jnp.asarray(x + g))[0]) == pytest.approx(1.5)


def test_redirected_rule_blocks_a_signal_that_pushes_an_off_unit_down():
    # Both hidden units off; the objective rewards unit 0 and penalizes unit 1: only unit 0's signal passes.
    with layers.relu_backward("redirected"):
        g = jax.grad(lambda a: (layers.leaky_relu(a) * jnp.array([1.0, -1.0])).sum())(jnp.array([[-1.0, -1.0]]))
    np.testing.assert_allclose(np.asarray(g), [[1.0, 0.0]])


def test_redirected_rule_is_the_gradient_where_some_unit_is_active():
    # x = (2, 0): hidden (1, 0) and output 0.5 are on, so the ordinary gradient (1, 0) gets through at every
    # ReLU, and the redirected rule leaves it alone even though hidden unit 1 is off with a positive signal.
    x = np.array([[2.0, 0.0]], np.float32)
    plain = np.asarray(jax.grad(lambda a: redirect_net(a).sum())(jnp.asarray(x)))
    np.testing.assert_allclose(plain, [[1.0, 0.0]])
    np.testing.assert_allclose(redirected_grad(x), plain)


def test_redirected_rule_decides_per_example():
    # Row 0 is all off (redirected), row 1 has an active unit (ordinary): each as it would be alone.
    x = np.array([[0.0, 0.0], [2.0, 0.0]], np.float32)
    np.testing.assert_allclose(redirected_grad(x), [[1.0, 2.0], [1.0, 0.0]])
    per_run = jax.vmap(lambda a: redirected_grad_traced(a[None])[0])(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(per_run), [[1.0, 2.0], [1.0, 0.0]])


def redirected_grad_traced(x: jax.Array) -> jax.Array:
    with layers.relu_backward("redirected"):
        return jax.grad(lambda a: redirect_net(a).sum())(x)


# ----- many units in one program ------------------------------------------------------------------------------

def conv_pool_net(params, x, taps):
    h = layers.leaky_relu(layers.conv2d(x, params["k1"], params["b1"], pad=(1, 1)))
    h = layers.max_pool(h, (2, 2), (2, 2))
    return {"c2": layers.leaky_relu(layers.conv2d(h, params["k2"], None, pad=(1, 1)))}


def test_vmap_over_units_equals_one_unit_at_a_time():
    keys = jax.random.split(jax.random.key(1), 4)
    params = {"k1": 0.5 * jax.random.normal(keys[0], (3, 3, 1, 4)), "b1": 0.1 * jnp.ones(4),
              "k2": 0.5 * jax.random.normal(keys[1], (3, 3, 4, 5))}
    net = TinyNet(conv_pool_net, params, (8, 8, 1))
    x = jax.random.normal(keys[2], (8, 8, 1))
    together = np.asarray(lenses.project(net, x, "c2", [0, 1, 2, 3, 4], "guided", keep="max"))
    alone = np.concatenate([np.asarray(lenses.project(net, x, "c2", u, "guided", keep="max")) for u in range(5)])
    np.testing.assert_allclose(together, alone, rtol=1e-6, atol=1e-7)
    assert all(np.abs(t).sum() > 0 for t in together) and not np.allclose(together[0], together[1])


PROTOTXT = """input: "x"
input_shape { dim: 1 dim: 1 dim: 8 dim: 8 }
layer { name: "c1" type: "Convolution" bottom: "x" top: "c1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "p1" type: "Pooling" bottom: "c1" top: "p1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "c2" type: "Convolution" bottom: "p1" top: "c2" convolution_param { num_output: 5 kernel_size: 3 pad: 1 } }
layer { name: "r2" type: "ReLU" bottom: "c2" top: "c2" }
"""


def test_a_prototxt_net_follows_the_rule_even_with_its_forward_pass_compiled_before():
    proto = build_network(parse_prototxt(PROTOTXT, "lens.prototxt"))
    params = jax.tree_util.tree_map(lambda a: 50.0 * a, proto.init(0))
    net = TinyNet(proto.apply, params, (8, 8, 1))
    x = jax.random.normal(jax.random.key(5), (8, 8, 1))
    proto.apply(params, x[None], ("c2",))            # its compiled forward pass (plain ReLUs) is now cached
    same = TinyNet(conv_pool_net, {"k1": params["c1"]["kernel"], "b1": params["c1"]["bias"],
                                   "k2": params["c2"]["kernel"]}, (8, 8, 1))
    got = {}
    for rule in lenses.RULES:
        got[rule] = np.asarray(lenses.project(net, x, "c2", [0, 3], rule))
        np.testing.assert_allclose(got[rule], np.asarray(lenses.project(same, x, "c2", [0, 3], rule)),
                                   rtol=1e-4, atol=1e-6 * np.abs(got[rule]).max(), err_msg=rule)
    assert not np.allclose(got["deconvnet"], got["gradient"]) and not np.allclose(got["guided"], got["gradient"])


def test_bad_requests_are_named(caffenet, digit):
    with pytest.raises(ValueError, match="unknown rule"):
        lenses.project(caffenet, digit, "conv1", 0, "zeiler")
    with pytest.raises(ValueError, match="unit 32 is out of range for layer 'conv1'"):
        lenses.project(caffenet, digit, "conv1", [0, 32])
    with pytest.raises(ValueError, match="unknown tap 'conv9'"):
        lenses.project(caffenet, digit, "conv9", 0)
    with pytest.raises(ValueError, match="outside layer 'conv1'"):
        lenses.project(caffenet, digit, "conv1", 0, keep=(28, 0))


def test_projection_display_puts_zero_at_mid_gray():
    m = np.zeros((4, 4, 1), np.float32)
    m[0, 0], m[1, 1] = 2.0, -1.0
    img = lenses.projection_display(m, {"channel_order": "gray"})
    assert img.shape == (4, 4) and img[0, 0] == 255 and img[1, 1] == 64 and img[2, 2] == 128
    rgb = lenses.projection_display(np.stack([m[..., 0], 0 * m[..., 0], -m[..., 0]], -1), None)  # BGR card
    assert rgb.shape == (4, 4, 3) and rgb[0, 0].tolist() == [0, 128, 255]


# ----- the project verb -------------------------------------------------------------------------------------

def read_png(path):
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img)


def test_project_writes_image_and_projection_side_by_side(tmp_path, capsys):
    out = tmp_path / "p.png"
    assert cli.main(["project", "--layer", "conv2", "--unit", "3", "--rule", "guided", "--digit", "5",
                     "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    png = read_png(out)
    assert png.shape == (224, 57 * 8)                     # 28 px at 8x, a one-pixel gap, 28 px
    left, right = png[:, :224].astype(float), png[:, 232:].astype(float)
    assert left.std() > 0 and right.std() > 0 and (png[:, 224:232] == 255).all()


def test_project_resizes_a_given_image_and_says_so(tmp_path, capsys):
    image = tmp_path / "digit.png"
    Image.fromarray(shipped.reference_digits()[0][0]).resize((40, 40)).convert("RGB").save(image)
    out = tmp_path / "p.png"
    assert cli.main(["project", "--layer", "conv1", "--unit", "2", "--image", str(image), "--scale", "2",
                     "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "is 40x40; resized to the model's 28x28" in captured.err and read_png(out).shape == (56, 114)


@pytest.mark.slow  # two passes over the 1000 shipped digits: ~20 s on a loaded 2-core CPU
def test_project_defaults_to_the_digit_that_activates_the_unit_most(tmp_path, capsys, caffenet):
    out = tmp_path / "p.png"
    assert cli.main(["project", "--layer", "fc8", "--unit", "4", "--scale", "1", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    index = int(line.split("shipped digit ")[1].split()[0])
    digits = np.stack([lenses.fit_to_model(d, caffenet)[0] for d in shipped.reference_digits()[0]])
    fc8 = np.asarray(caffenet(jnp.asarray(digits), ("fc8",))["fc8"])[:, 4]
    assert index == int(np.argmax(fc8)) and read_png(out).std() > 0


@pytest.mark.parametrize("argv, problem", [
    (["--unit", "1", "--image", "missing.png"], "no such image file: missing.png"),
    (["--unit", "1", "--layer", "conv9"], "unknown tap 'conv9'"),
    (["--unit", "64", "--layer", "conv2"], "unit 64 is out of range for layer 'conv2'"),
    (["--unit", "-1"], "must be between 0 and"),
    (["--unit", "1", "--rule", "zeiler"], "invalid choice"),
    (["--unit", "1", "--digit", "1000"], "digit 1000 is out of range"),
    (["--unit", "1", "--digit", "3", "--image", "x.png"], "give --image or --digit, not both"),
])
def test_project_errors_are_one_line(argv, problem, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["project", *argv, "--out", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxviz project: ") and problem in err and err.count("\n") == 1, err
    assert "Traceback" not in err and not (tmp_path / "p.png").exists()


def test_project_refuses_to_overwrite_a_file_that_is_not_a_png(tmp_path, capsys):
    notes = tmp_path / "notes.png"
    notes.write_text("my notes")
    assert cli.main(["project", "--unit", "1", "--digit", "0", "--out", str(notes)]) == 2
    err = capsys.readouterr().err
    assert "is not a PNG; refusing to overwrite it (argument --out)" in err and err.count("\n") == 1
    assert notes.read_text() == "my notes"
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert cli.main(["project", "--unit", "1", "--image", str(bad), "--out", str(tmp_path / "o.png")]) == 2
    assert "cannot read" in capsys.readouterr().err
