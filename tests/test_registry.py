"""The method registry: every registered method builds on the embedded pair and on a user's model, runs in
a sweep that scores it, and is named by the CLI."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
from jaxviz import cli
from jaxviz.core.maco import MacoImage
from jaxviz.core.run import check_setup
from jaxviz.recipes import registry
from jaxviz.recipes.maco import power_law_spectrum
from jaxviz.workflows import sweep as sw

NEW = ("maco", "cppn", "pyramid")
IMAGE_METHODS = ("lucid", *NEW)  # the sigmoid-rendered images fitted to a card
SCORES = ("percentile", "judge_label", "target_label", "path_score", "scored_rank")


@pytest.fixture(scope="module")
def pair():
    return jaxviz.load("caffenet"), jaxviz.load("generator")


def user_model(shape: tuple[int, int, int]) -> jaxviz.Model:
    """A small dense network on ``shape`` inputs without a preprocessing card, 10 logits."""
    rng = np.random.default_rng(0)
    params = {"w1": rng.normal(0, 0.05, (int(np.prod(shape)), 16)).astype(np.float32),
              "w2": rng.normal(0, 0.3, (16, 10)).astype(np.float32)}

    def forward(p, x):
        hidden = jax.nn.relu(x.reshape(len(x), -1) @ p["w1"])
        return {"hidden": hidden, "logits": hidden @ p["w2"]}
    return jaxviz.from_function(forward, params, shape)


def rendered_shape(preset, n: int = 2) -> tuple[int, ...]:
    z = preset.param.init(jax.random.key(0), n)
    return tuple(jax.eval_shape(lambda v: preset.param.render(preset.aux_params, v), z).shape)


def test_the_new_methods_are_registered_and_reach_the_cli_and_sweeps():
    for name in NEW:
        spec = registry.method_spec(name)
        assert spec.name == name and spec.summary and not spec.needs_generator
        assert name in sw.METHODS and name in cli.VISUALIZE_METHODS
    with pytest.raises(ValueError, match="known: .*maco, cppn, pyramid"):
        registry.method_spec("nope")


@pytest.mark.parametrize("name", NEW)
def test_each_new_method_builds_on_the_embedded_pair(pair, name):
    clf, gen = pair
    preset, objective = registry.build(name, clf, gen, "fc8")
    assert preset.name == name and objective.unit_layer == "fc8"
    assert rendered_shape(preset) == (2, *clf.input_shape)
    check_setup(clf, objective, preset.param, preset.aux_params, np.zeros((1,), np.int32))
    assert registry.build(name, clf, None, "fc8", steps=7)[0].method.steps == 7  # no generator needed


def test_maco_fixes_the_digits_spectrum_on_the_pair_and_a_power_law_elsewhere(pair):
    digits = registry.build("maco", pair[0], None, "fc8")[0].param
    assert isinstance(digits, MacoImage)
    np.testing.assert_allclose(digits.magnitude_array(), jaxviz.recipes.digits_spectrum(), rtol=1e-5, atol=1e-6)
    rgb = registry.build("maco", user_model((16, 12, 3)), None, "logits")[0].param
    law = power_law_spectrum(3, 16, 12)
    np.testing.assert_allclose(rgb.magnitude_array(), law, rtol=1e-5)
    assert law[0, 0, 0] == law.max() and law[0, 0, 1] > law[0, 0, 3]  # energy falls with frequency


@pytest.mark.parametrize("name", IMAGE_METHODS)
@pytest.mark.parametrize("shape", [(28, 28, 1), (16, 12, 3)])
def test_image_methods_fit_a_user_model_without_a_card(name, shape):
    # A one-channel model with no card used to get three BGR channels from the recipes' default card.
    model = user_model(shape)
    preset, objective = registry.build(name, model, None, "logits", steps=2)
    assert rendered_shape(preset) == (2, *shape)
    check_setup(model, objective, preset.param, preset.aux_params, np.zeros((1,), np.int32))


def test_image_card_keeps_a_given_channel_order(pair):
    assert registry.image_card(pair[0]) == dict(pair[0].preprocessing)
    assert registry.image_card(user_model((28, 28, 1)))["channel_order"] == "gray"
    assert "channel_order" not in registry.image_card(user_model((16, 12, 3)))


def test_visualize_help_names_every_method(capsys):
    assert cli.main(["visualize", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in cli.VISUALIZE_METHODS:
        assert f"{name}: {' '.join(registry.METHODS[name].summary.split())}" in text
    assert set(NEW) <= set(cli.VISUALIZE_METHODS)


def test_sweep_help_names_the_new_methods(capsys):
    assert cli.main(["sweep", "--help"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in NEW)


def _rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


# maco compiles an FFT render and takes about 30-50 s on a 2-core CPU; pyramid about 15 s
@pytest.mark.parametrize("name", ["pyramid", pytest.param("maco", marks=pytest.mark.slow)])
def test_a_tiny_sweep_with_a_new_method_is_scored(pair, tmp_path, name):
    out = tmp_path / name
    sw.sweep(*pair, sw.SweepConfig("fc8", (3, 7), name, steps=3), out, progress=False)
    rows = _rows(out)
    assert [r["unit"] for r in rows] == [3, 7]
    for row in rows:
        assert all(row[k] is not None for k in SCORES), row
        assert row["target_label"] == str(row["unit"]) and isinstance(row["flags"], list)
        assert 0.0 <= row["percentile"] <= 100.0 and (out / row["image"]).is_file()
    page = (out / "index.html").read_text()
    assert f"{name} sweep of fc8: 2 runs, 3 steps" in page
    for row in rows:  # the tiles carry the same scores as the table
        assert f'"image": "{row["image"]}", "percentile": {row["percentile"]}, "judge_label": "{row["judge_label"]}"' in page


@pytest.mark.slow  # the CPPN's 8 dense layers take a while to compile on a 2-core CPU
def test_visualize_and_sweep_with_cppn_from_the_command_line(tmp_path, capsys):
    png = tmp_path / "three.png"
    assert cli.main(["visualize", "--unit", "3", "--method", "cppn", "--steps", "3", "--out", str(png)]) == 0
    assert png.is_file() and "judge reads" in capsys.readouterr().out
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "--units", "0,1", "--method", "cppn", "--steps", "3", "--no-progress",
                     "--out", str(out)]) == 0
    assert all(r["judge_label"] is not None and r["percentile"] is not None for r in _rows(out))


@pytest.mark.parametrize("name", list(registry.METHODS))
def test_default_steps_are_what_the_builder_runs_without_steps(pair, name):
    """The registry's step counts (what a sweep records) match the recipes' own defaults."""
    layer = "fc8"
    implicit, _ = registry.build(name, *pair, layer)
    explicit, _ = registry.build(name, *pair, layer, registry.default_steps(name))
    assert implicit.method.steps == explicit.method.steps


def test_a_sweep_without_steps_records_the_methods_own(pair, tmp_path):
    out = tmp_path / "lucid"
    sw.sweep(*pair, sw.SweepConfig("fc8", (3,), "lucid"), out, progress=False, max_chunks=0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"] == registry.default_steps("lucid") == 512
