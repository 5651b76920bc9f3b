"""Scores that travel with every picture: percentiles, the path check, flags, the second opinion, PNGs."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jaxviz
from jaxviz import cli, recipes
from jaxviz.core import objectives as O
from jaxviz.core.loop import Method
from jaxviz.core.params import Pixels
from jaxviz.core.updates import normalized_gradient_ascent
from jaxviz.scoring import default_scorer, flags_for, path_similarity, percentile_of
from jaxviz.models import preprocessing as pp
from jaxviz.models import shipped
from jaxviz.scoring.scores import NEVER_FIRED, NOT_ON_TOP, SILENT_ON_REAL, STOPPED_NAN


@pytest.fixture(scope="module")
def pair():
    return jaxviz.load("caffenet"), jaxviz.load("generator")


def test_percentile_closed_form():
    ref = np.arange(100, dtype=np.float32)
    assert percentile_of(100.0, ref) == 100.0 and percentile_of(-1.0, ref) == 0.0
    assert percentile_of(49.5, ref) == 50.0
    assert percentile_of(10.0, ref) == pytest.approx(10.5)  # ties count half
    assert np.isnan(percentile_of(3.0, np.array([])))


def test_path_similarity_closed_form():
    rng = np.random.default_rng(0)
    top = [rng.normal(size=(5, 8)) + np.arange(8)]             # exemplars share a profile
    rand = [rng.normal(size=(20, 8))]                           # random images do not
    like_top = [np.arange(8, dtype=float)[None] + 0.1 * rng.normal(size=(1, 8))]
    unlike = [rng.normal(size=(1, 8))]
    assert path_similarity(like_top, top, rand)[0][0] > 0.5
    assert path_similarity(like_top, top, rand)[0][0] > path_similarity(unlike, top, rand)[0][0]


def test_flags_have_reasons_and_fixes():
    names = lambda flags: [f.name for f in flags]
    assert names(flags_for("conv3", 0.0, 0.0, 30, -1)) == [NEVER_FIRED]
    assert "conv3:pre" in flags_for("conv3", 0.0, 0.0, 30, -1)[0].fix
    assert names(flags_for("fc8", 5.0, 6.0, 2, -1)) == [NOT_ON_TOP]
    assert STOPPED_NAN in names(flags_for("fc8", 5.0, 6.0, 0, 7))
    assert flags_for("fc8", 5.0, 6.0, 0, -1, percentile=99.0) == []
    assert all(f.reason and f.fix for f in flags_for("fc8", 0.0, 0.0, 3, 4, 10.0, "1", "7"))
    logit = flags_for("fc8", -3.0, -2.0, 5, -1, rectified=False)
    assert names(logit) == [NEVER_FIRED] and ":pre" not in logit[0].fix and "no ReLU" in logit[0].reason
    silent = flags_for("fc6", 4.0, 4.0, 0, -1, percentile=100.0, silent_references=1000)
    assert names(silent) == [SILENT_ON_REAL] and "1000" in silent[0].reason and "pixel" in silent[0].fix
    assert flags_for("fc8", 4.0, 4.0, 0, -1, rectified=False, silent_references=1000) == []
    assert names(flags_for("fc6:pre", 4.0, 4.0, 0, -1, rectified=False, silent_references=1000)) == [SILENT_ON_REAL]


def test_units_silent_on_every_real_digit_are_flagged_whatever_the_image(pair):
    classifier, _ = pair
    pixels, _ = shipped.reference_digits()
    x = pp.to_network(pixels, classifier.preprocessing)
    fc6 = np.asarray(classifier.function(classifier.params, jnp.asarray(x), ("fc6",))["fc6"])
    silent = set(np.flatnonzero(fc6.max(axis=0) <= 0).tolist())  # brute force over the 1000 digits
    assert 0 < len(silent) < fc6.shape[1]
    units = list(range(fc6.shape[1]))
    image = np.repeat(x[:1], len(units), axis=0)  # one real digit, scored as every unit's picture
    reports = default_scorer(classifier).score(image, "fc6", units)
    flagged = {r.unit for r in reports if SILENT_ON_REAL in [f.name for f in r.flags]}
    assert flagged == silent
    # read through the pre-activation (as visualize reads fc6 by default): the same units
    reports = default_scorer(classifier).score(image, "fc6:pre", units)
    assert {r.unit for r in reports if SILENT_ON_REAL in [f.name for f in r.flags]} == silent


def test_rectified_layers_are_those_with_a_pre_activation(pair):
    scorer = default_scorer(pair[0])
    assert scorer.is_rectified("fc6") and scorer.is_rectified("conv3")
    assert not scorer.is_rectified("fc6:pre") and not scorer.is_rectified("fc8") and not scorer.is_rectified("prob")


def test_reference_set_is_unseen_digits_in_the_models_space(pair):
    scorer = default_scorer(pair[0])
    assert scorer.reference is not None and len(scorer.reference.images) >= 1000
    assert scorer.reference.images.shape[1:] == (28, 28, 1)
    values = scorer.reference_values("fc8", "center")
    accuracy = np.mean(values.argmax(1) == scorer.reference.labels)
    assert accuracy > 0.97  # the classifier's own figure on digits it never saw


@pytest.mark.slow
def test_dgn_am_result_carries_its_report_and_saves_a_card_aware_png(pair, tmp_path):
    clf, gen = pair
    v = recipes.dgn_am(gen, steps=20).visualize(clf, O.unit("fc8", 3), key=jax.random.key(0))
    r = v.report
    assert r.layer == "fc8" and r.unit == 3 and r.rank == 0 and r.percentile > 90
    assert r.judge_label == "3" and r.target_label == "3" and r.flags == ()
    assert r.activation == pytest.approx(float(np.asarray(
        clf(v.best_image, ("fc8",))["fc8"])[0, 3]), rel=1e-5)
    path = v.save_png(tmp_path / "three.png")
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == (224, 224)  # gray, enlarged 8x
        shown = np.asarray(im)[::8, ::8]
    from jaxviz.models import preprocessing as pp
    np.testing.assert_array_equal(shown, pp.to_display(np.asarray(v.best_image)[0], clf.preprocessing))
    json.dumps(r.as_dict())  # JSON-ready


@pytest.mark.slow
def test_path_check_scores_a_fooling_image_below_a_natural_one(pair):
    """A few pixels driven hard can put a unit on top, but not the way real digits reach it."""
    clf, gen = pair
    natural = recipes.dgn_am(gen, steps=30).visualize(clf, O.unit("fc8", 7), key=jax.random.key(1))
    mask = np.zeros((1, 28, 28, 1), np.float32)
    mask.reshape(-1)[np.random.default_rng(0).choice(28 * 28, 20, replace=False)] = 1.0  # 20 scattered pixels
    keep_twenty = lambda z, ctx: z * jnp.asarray(mask)
    fooling = jaxviz.visualize(clf, O.unit("fc8", 7), Pixels((28, 28, 1), init_std=10.0),
                               method=Method(60, normalized_gradient_ascent(100.0), operator=keep_twenty),
                               key=jax.random.key(0))
    assert fooling.report.rank == 0 and fooling.report.activation > 0  # it does fool the objective
    assert np.abs(np.asarray(fooling.best_image)).max() > 1000         # with pixels far outside the range
    assert fooling.report.path_score < natural.report.path_score - 0.1
    assert natural.report.path_score > 0.2


def test_unit_that_never_fires_at_the_centre_is_flagged_by_the_cli(capsys, tmp_path):
    # conv3 channel 12 of the shipped classifier is 0 at the centre of every reference digit
    code = cli.main(["visualize", "--layer", "conv3", "--unit", "12", "--method", "pixel", "--objective", "raw",
                     "--steps", "6", "--out", str(tmp_path / "c.png")])
    out = capsys.readouterr().out
    assert code == 0  # a flag is information, not an error
    assert "flag never_fired" in out and "conv3:pre" in out
    # the channel is 0 at the centre of every reference digit (it fires at their border): said as well
    assert "flag silent_on_real" in out and "2 flag(s)" in out
    assert out.index("flag never_fired") < out.index("flag silent_on_real")  # what the run did comes first
    assert (tmp_path / "c.png").is_file()


@pytest.mark.slow
def test_sweep_to_a_pipe_prints_one_line_per_stage_with_step_counts(tmp_path):
    cmd = [sys.executable, "-m", "jaxviz", "sweep", "--layer", "fc8", "--units", "0-3", "--method", "pixel",
           "--steps", "3", "--chunk-size", "2", "--out", str(tmp_path / "s")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                              "CI": ""})
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "chunk" in line and "so far" not in line]
    assert len(lines) == 2 and all("2/2 steps" in line for line in lines), done.stderr  # steps - 1 updates
    assert "\r" not in done.stderr
    rows = [json.loads(line) for line in (tmp_path / "s" / "results.jsonl").read_text().splitlines()]
    assert all(r["percentile"] is not None and r["judge_label"] is not None for r in rows)
    assert "flags" in done.stdout
