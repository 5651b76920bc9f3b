"""Network dissection: a unit built to fire on one concept is found as its detector (IoU near 1, near 0 for the
others), the threshold is numpy's quantile of all activations, the IoU is the dataset-wide ratio of sums,
the mask folder format round-trips, and the ``dissect`` verb writes its outputs or fails in one line."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxviz import cli
from jaxviz.lenses import dissection as ld
from jaxviz.models import load
from jaxviz.models.model import Model
from jaxviz.workflows import dissection as wd
from tests.helpers import faults

DOT, STROKE, NOISE = 0, 1, 2
GRAY_01 = {"channel_order": "gray", "pixel_scale": 1.0, "mean": 0.0}  # network input = pixel / 255


class HandMade:
    """A 'network' with one map tap at input resolution: a dot unit, a stroke unit and a noise unit."""

    input_shape = (28, 28, 1)
    tap_names = ("maps",)

    def apply(self, params, x, taps):
        del params, taps
        r = jnp.arange(28.0)
        tiebreak = (r[:, None] * 28 + r[None, :]) / 784.0 * 1e-3   # distinct values, far below any step
        v = x[..., 0]
        dot = v + tiebreak                                   # the dot (255) is the one brightest thing
        stroke = ((v > 0.3) & (v < 0.9)).astype(jnp.float32) + tiebreak
        noise = jnp.cos(v * 17.0 + tiebreak * 1e5)
        return {"maps": jnp.stack([dot, stroke, noise], axis=-1)}


@pytest.fixture(scope="module")
def hand_made():
    return Model("hand_made", HandMade(), {}, {"preprocessing": GRAY_01})


@pytest.fixture(scope="module")
def masks():
    return ld.synthetic_mask_set(200)


def test_a_unit_built_to_fire_on_a_concept_is_its_detector(hand_made, masks):
    result = ld.dissect(hand_made, masks, "maps")
    dot = masks.concepts.index("dot")
    assert result.iou[DOT, dot] > 0.9
    others = np.delete(result.iou[DOT], dot)
    assert others.max() < 0.02
    assert result.best[DOT] == dot and result.detector[DOT]
    # The top 0.5 % of a stroke unit's values cover a small part of the strokes: not a detector.
    assert result.best[STROKE] == masks.concepts.index("stroke") and not result.detector[STROKE]
    assert not result.detector[NOISE]
    rows = result.rows()
    assert rows[DOT]["concept"] == "dot" and rows[DOT]["detector"] is True


def test_the_threshold_and_iou_follow_the_definition(hand_made, masks):
    result = ld.dissect(hand_made, masks, "maps", quantile=0.01)
    maps = np.asarray(HandMade().apply({}, masks.pixels[..., None].astype(np.float32) / 255.0, ())["maps"])
    expected_t = np.quantile(maps.reshape(-1, 3), 0.99, axis=0)
    np.testing.assert_allclose(result.thresholds, expected_t, rtol=1e-6)
    # Without ties, the quantile's share of all positions lies above the threshold (to one position).
    spread = np.random.default_rng(0).normal(size=(50, 7, 7, 4)) * np.arange(1, 5)
    above = (spread > ld.unit_thresholds(spread, 0.005)).reshape(-1, 4).sum(0)
    assert set(above.tolist()) <= {12, 13}   # 0.005 * 2450 = 12.25
    on = maps > expected_t.astype(np.float32)              # same size: the upsampling is the identity
    labels = masks.masks
    inter = np.einsum("nhwu,nhwc->uc", on.astype(float), labels.astype(float))
    union = on.sum((0, 1, 2))[:, None] + labels.sum((0, 1, 2))[None, :] - inter
    np.testing.assert_allclose(result.iou, inter / union, rtol=1e-6)
    np.testing.assert_array_equal(result.detector, (inter / union).max(1) > 0.04)


def test_coarse_maps_are_upsampled_to_the_mask_size():
    maps = np.zeros((1, 2, 2, 1), np.float32)
    maps[0, 0, 0, 0] = 1.0                          # the top-left cell of a 2x2 map
    on = np.asarray(ld.unit_masks(maps, np.array([0.5]), (4, 4)))[0, ..., 0]
    # Bilinear with half-pixel centres: the top-left 4x4 quadrant is 1, 0.75, 0.25 ...: above 0.5 there.
    np.testing.assert_array_equal(on, [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_fc_layers_and_bad_quantiles_are_refused(masks):
    model = load("caffenet")
    with pytest.raises(ValueError, match="no spatial map"):
        ld.dissect(model, ld.synthetic_mask_set(4), "fc6")
    with pytest.raises(ValueError, match="quantile"):
        ld.dissect(model, masks, "conv1", quantile=0.0)


def test_the_synthetic_set_has_disjoint_dot_and_stroke(masks):
    c = {name: masks.masks[..., i] for i, name in enumerate(masks.concepts)}
    assert not (c["dot"] & c["stroke"]).any() and not (c["dot"] & c["background"]).any()
    assert (c["dot"] | c["stroke"] | c["background"]).all()
    assert np.all(masks.pixels[c["dot"]] == 255) and masks.pixels[~c["dot"]].max() <= ld.STROKE_MAX
    assert c["dot"].sum(axis=(1, 2)).tolist() == [ld.DOT ** 2] * len(masks.pixels)
    assert c["top_half"][:, :14].all() and not c["top_half"][:, 14:].any()


def test_the_mask_folder_round_trips(tmp_path, hand_made):
    small = ld.synthetic_mask_set(12, seed=3)
    wd.write_mask_folder(tmp_path / "set", small)
    card = json.loads((tmp_path / "set" / wd.CONCEPTS_FILE).read_text())
    assert card == {"format": wd.MASK_FORMAT, "concepts": list(ld.SYNTHETIC_CONCEPTS)}
    back = wd.read_mask_folder(tmp_path / "set", hand_made)
    np.testing.assert_array_equal(back.pixels, small.pixels)
    np.testing.assert_array_equal(back.masks, small.masks)
    assert back.names == small.names
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "set" / "masks" / "digit_0000" / "dot.png")
    with pytest.raises(ValueError, match="must have its image's size"):
        wd.read_mask_folder(tmp_path / "set", hand_made)


def test_the_dissect_verb_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "d"
    assert cli.main(["dissect", "--layer", "conv1", "--synthetic", "--n", "40", "--out", str(out)]) == 0
    assert "detectors" in capsys.readouterr().out
    lines = (out / "dissection.csv").read_text().splitlines()
    assert lines[0] == "unit,concept,iou,detector,threshold" and len(lines) == 33
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    with np.load(out / "dissection.npz") as z:
        assert z["iou"].shape == (32, 4)
        np.testing.assert_allclose([r["iou"] for r in rows], z["iou"].max(1))
    assert (out / "dissection.png").exists() and "dissection.png" in (out / "index.html").read_text()
    wd.write_synthetic_mask_folder(tmp_path / "set", 20)
    assert cli.main(["dissect", "--layer", "conv2", "--units", "0-3", "--masks", str(tmp_path / "set"),
                     "--out", str(tmp_path / "d2")]) == 0
    assert len((tmp_path / "d2" / "dissection.csv").read_text().splitlines()) == 5


@pytest.mark.parametrize("argv, needles", [
    (["--layer", "conv2", "--masks", "{missing}"], ["does not exist", "--masks"]),
    (["--layer", "conv2"], ["--masks", "--synthetic"]),
    (["--layer", "conv9", "--synthetic"], ["unknown tap 'conv9'"]),
    (["--layer", "fc7", "--synthetic", "--n", "4"], ["no spatial map"]),
    (["--layer", "conv2", "--synthetic", "--quantile", "0"], ["--quantile"]),
    (["--layer", "conv2", "--synthetic", "--n", "0"], ["--n", "between 1 and"]),
    (["--layer", "conv2", "--masks", "{empty}"], ["concepts.json"]),
])
def test_bad_dissect_arguments_are_one_line(tmp_path, capsys, argv, needles):
    (tmp_path / "empty").mkdir()
    subst = {"{missing}": str(tmp_path / "nope"), "{empty}": str(tmp_path / "empty")}
    argv = ["dissect", *[subst.get(a, a) for a in argv], "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    line = faults.one_line_error(capsys.readouterr().err, "jaxviz dissect: ")
    for needle in needles:
        assert needle in line, (needle, line)
    assert not (tmp_path / "out").exists()


def test_a_folder_of_another_dissection_is_refused(tmp_path, capsys):
    base = ["dissect", "--layer", "conv1", "--synthetic", "--n", "10", "--out", str(tmp_path / "d")]
    assert cli.main(base) == 0
    capsys.readouterr()
    assert cli.main(base[:2] + ["conv2"] + base[3:]) == 2
    assert "different dissection" in faults.one_line_error(capsys.readouterr().err, "jaxviz dissect: ")


class Halves:
    """Two units that each fire on the dot in one half of the image: only together do they cover the concept."""

    input_shape = (28, 28, 1)
    tap_names = ("maps",)

    def apply(self, params, x, taps):
        del params, taps
        r = jnp.arange(28.0)
        tiebreak = (r[:, None] * 28 + r[None, :]) / 784.0 * 1e-3
        dot = (x[..., 0] > 0.99).astype(jnp.float32)
        left = jnp.where(r[None, :] < 14, dot, 0.0) + tiebreak
        right = jnp.where(r[None, :] >= 14, dot, 0.0) + tiebreak
        return {"maps": jnp.stack([left, right, jnp.cos(x[..., 0] * 17.0 + tiebreak * 1e5)], axis=-1)}


@pytest.mark.slow  # ~14 s on a loaded 2-core CPU: 300 full-batch steps over 157k pixels
def test_net2vec_combines_units_that_each_cover_part_of_a_concept(masks):
    model = Model("halves", Halves(), {}, {"preprocessing": GRAY_01})
    dot = masks.concepts.index("dot")
    single = ld.dissect(model, masks, "maps", quantile=0.0025).iou[:, dot]
    combined = ld.net2vec(model, masks, "maps", quantile=0.0025, steps=200)
    assert single.max() < 0.6 and combined.iou[dot] > 0.9
    w = combined.weights[dot]
    assert min(w[0], w[1]) > 5 * abs(w[2])   # both halves carry the concept, the noise unit does not
    assert combined.rows()[dot]["top_units"][:2] in ([0, 1], [1, 0])
