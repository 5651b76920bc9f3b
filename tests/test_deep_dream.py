"""DeepDream (``jaxviz.lenses.deep_dream``): the layer's norm grows at every octave on a shipped digit, the
dream keeps the input's size, the pieces (octave sizes, roll jitter, octave rendering) do what they say,
and the ``dream`` verb writes a PNG or fails in one line."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxviz import cli, lenses, models
from jaxviz.core import objectives
from jaxviz.lenses import dream as dd
from jaxviz.models import layers
from jaxviz.models import preprocessing as pp
from jaxviz.models import shipped

GRAY = {"channel_order": "gray", "pixel_scale": 1.0, "mean": [0.0]}  # pixels in [0, 1]


@dataclasses.dataclass(frozen=True)
class TinyNet:
    function: Callable
    params: Any
    input_shape: tuple
    preprocessing: dict = dataclasses.field(default_factory=lambda: dict(GRAY))


def conv_net(params, x, taps):
    return {"c1": layers.leaky_relu(layers.conv2d(x, params["k"], None, pad=(1, 1)))}


@pytest.fixture(scope="module")
def caffenet():
    return models.load("caffenet")


@pytest.mark.slow  # two octaves compiled: ~10 s on a loaded 2-core CPU (the dream verb's test is the quick check)
def test_deep_dream_raises_the_layer_norm_at_every_octave_on_a_shipped_digit(caffenet):
    images, _ = shipped.reference_digits()
    x = pp.to_network(images[3:4], caffenet.preprocessing)[0]
    dream = lenses.deep_dream(caffenet, x, "conv1", octaves=2, steps_per_octave=4)
    assert dream.image.shape == x.shape and dream.sizes == ((20, 20), (28, 28))
    assert np.all(dream.norm_after > dream.norm_before), (dream.norm_before, dream.norm_after)
    assert np.abs(dream.image - x).max() > 1.0
    # the dream's norm, measured independently, is the last octave's
    final = np.asarray(caffenet(jnp.asarray(dream.image[None]), ("conv1",))["conv1"])
    assert np.sqrt(np.sum(final.astype(np.float64) ** 2)) == pytest.approx(dream.norm_after[-1], rel=1e-4)
    # the pixels stay in the card's range (black .. white, in network space)
    low, high = dd.pixel_bounds(caffenet.preprocessing, (28, 28), 1)
    assert dream.image.min() >= low.min() - 1e-4 and dream.image.max() <= high.max() + 1e-4


@pytest.mark.slow  # three octaves compiled: ~12 s on a loaded 2-core CPU
def test_deep_dream_of_one_unit_raises_that_unit():
    k = jax.random.normal(jax.random.key(0), (3, 3, 1, 4))
    net = TinyNet(conv_net, {"k": k}, (12, 12, 1))
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (12, 12, 1)), jnp.float32)
    dream = lenses.deep_dream(net, x, "c1", unit=2, octaves=3, octave_scale=1.5, steps_per_octave=5, lr=0.05,
                              jitter=1, reduce="mean")
    assert dream.sizes == ((5, 5), (8, 8), (12, 12)) and dream.image.shape == (12, 12, 1)
    assert np.all(dream.norm_after > dream.norm_before)
    assert dream.image.min() >= 0.0 and dream.image.max() <= 1.0     # clipped to the card's pixel range
    c = np.asarray(conv_net({"k": k}, jnp.asarray(dream.image[None]), ())["c1"])[..., 2]
    assert np.sqrt(np.sum(c ** 2)) == pytest.approx(dream.norm_after[-1], rel=1e-4)


def test_octave_sizes_go_from_small_to_the_image():
    assert dd.octave_sizes(28, 28, 3, 1.4) == ((14, 14), (20, 20), (28, 28))
    assert dd.octave_sizes(227, 100, 1, 2.0) == ((227, 100),)
    with pytest.raises(ValueError, match="octaves must be >= 1"):
        dd.octave_sizes(28, 28, 0, 1.4)
    with pytest.raises(ValueError, match="octave_scale must be > 1"):
        dd.octave_sizes(28, 28, 2, 1.0)


def test_roll_jitter_rolls_and_its_gradient_rolls_back():
    x = jnp.arange(2 * 5 * 6 * 1, dtype=jnp.float32).reshape(2, 5, 6, 1)
    key = jax.random.key(3)
    y = dd.roll_jitter(2)(key, x)
    d = jax.random.randint(key, (2,), -2, 3)
    np.testing.assert_array_equal(np.asarray(y), np.roll(np.asarray(x), (int(d[0]), int(d[1])), axis=(1, 2)))
    weights = jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape)
    g = jax.grad(lambda a: jnp.sum(dd.roll_jitter(2)(key, a) * weights))(x)
    np.testing.assert_array_equal(np.asarray(g), np.roll(np.asarray(weights), (-int(d[0]), -int(d[1])), axis=(1, 2)))
    assert dd.roll_jitter(0)(key, x) is x


def test_an_octave_image_is_rendered_at_the_network_size():
    small = dd.OctaveImage((5, 5, 1), (12, 12))
    z = jnp.ones((1, 5, 5, 1))
    assert small.render(None, z).shape == (1, 12, 12, 1)
    np.testing.assert_allclose(np.asarray(small.render(None, z)), 1.0, rtol=1e-6)
    same = dd.OctaveImage((12, 12, 1), (12, 12))
    z = jnp.arange(144.0).reshape(1, 12, 12, 1)
    assert same.render(None, z) is z


def test_dream_objective_is_half_the_squared_norm_or_the_mean():
    acts = {"c": jnp.array([[[[1.0, 2.0], [3.0, -4.0]]]])}
    assert float(dd.dream_objective("c")(acts)) == pytest.approx(15.0)
    assert float(dd.dream_objective("c", unit=1)(acts)) == pytest.approx(10.0)
    assert float(dd.dream_objective("c", reduce="mean")(acts)) == pytest.approx(0.5)
    assert isinstance(dd.dream_objective("c"), objectives.Objective)


def test_deep_dream_names_bad_requests(caffenet):
    x = np.zeros((28, 28, 1), np.float32)
    with pytest.raises(ValueError, match="network's input shape"):
        lenses.deep_dream(caffenet, np.zeros((20, 20, 1)), "conv1")
    with pytest.raises(ValueError, match="unit 32 is out of range"):
        lenses.deep_dream(caffenet, x, "conv1", unit=32)
    with pytest.raises(ValueError, match="unknown tap 'conv9'"):
        lenses.deep_dream(caffenet, x, "conv9")
    with pytest.raises(ValueError, match="octaves must be >= 1"):
        lenses.deep_dream(caffenet, x, "conv1", octaves=0)


# ----- the dream verb ---------------------------------------------------------------------------------------

def test_dream_writes_a_png_of_the_image_size(tmp_path, capsys):
    image = tmp_path / "digit.png"
    Image.fromarray(shipped.reference_digits()[0][7]).save(image)
    out = tmp_path / "d.png"
    assert cli.main(["dream", "--image", str(image), "--layer", "conv1", "--octaves", "2", "--steps", "2",
                     "--scale", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "L2 norm per octave: 20x20:" in text and f"wrote {out}" in text
    norms = re.findall(r"(\d+)x\d+: ([\d.e+-]+) -> ([\d.e+-]+)", text)
    assert [int(size) for size, _, _ in norms] == [20, 28]
    assert all(float(after) > float(before) for _, before, after in norms), text   # every octave raised it
    with Image.open(out) as img:
        assert img.format == "PNG"
        png = np.asarray(img)
    assert png.shape == (84, 84) and png.astype(float).std() > 0


@pytest.mark.parametrize("argv, problem", [
    (["--image", "missing.png"], "no such image file: missing.png"),
    (["--layer", "conv9"], "unknown tap 'conv9'"),
    (["--layer", "conv2", "--unit", "64"], "unit 64 is out of range for layer 'conv2'"),
    (["--octaves", "0"], "must be between 1 and 12"),
    (["--octave-scale", "1"], "must be a finite number in (1, 4]"),
    (["--steps", "0"], "must be between 1 and"),
])
def test_dream_errors_are_one_line(argv, problem, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["dream", *argv, "--out", str(tmp_path / "d.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxviz dream: ") and problem in err and err.count("\n") == 1, err
    assert "Traceback" not in err and not (tmp_path / "d.png").exists()
