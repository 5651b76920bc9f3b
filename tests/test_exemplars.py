"""Top real exemplars: the streamed top-k equals a brute-force sort, a resumed job equals an uninterrupted one,
the receptive-field crop is the gradient footprint, and the ``exemplars`` verb writes its outputs or fails
in one line."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxviz import cli
from jaxviz.lenses import exemplars as lx
from jaxviz.lenses import receptive as rf
from jaxviz.models import load, shipped
from jaxviz.models import preprocessing as pp
from jaxviz.models.model import Model
from jaxviz.scoring.reference import merge_top_k, top_k_rows
from jaxviz.workflows import exemplars as wx
from jaxviz.workflows.runfolder import SweepError
from tests.helpers import faults

N = 200
K = 7


@pytest.fixture(scope="module")
def model():
    return load("caffenet")


@pytest.fixture(scope="module")
def digits(model):
    return pp.to_network(shipped.reference_digits()[0][:N], model.preprocessing)


def brute_force(model, images, layer):
    """Per image and unit: value and flat position of the max over the map, from one forward of everything."""
    acts = np.asarray(jax.jit(lambda x: model(x, (layer,))[layer])(images))
    if acts.ndim == 2:
        return acts, None, None
    n, h, w, c = acts.shape
    flat = acts.reshape(n, h * w, c)
    return flat.max(axis=1), flat.argmax(axis=1), acts


@pytest.mark.parametrize("layer, n, batch", [
    ("pool1", N, 32),   # 7 batches, the last one padded
    pytest.param("fc8", 64, 12, marks=pytest.mark.slow),
    pytest.param("conv3", N, 32, marks=pytest.mark.slow),
    pytest.param("fc7", N, 32, marks=pytest.mark.slow),
])
def test_streamed_top_k_equals_a_brute_force_sort(model, digits, layer, n, batch):
    digits = digits[:n]
    ex = lx.top_exemplars(model, digits, layer, k=K, batch_size=batch)
    values, where, acts = brute_force(model, digits, layer)
    order = np.argsort(-values, axis=0, kind="stable")[:K].T           # (units, K)
    np.testing.assert_array_equal(ex.units, np.arange(values.shape[1]))
    np.testing.assert_array_equal(ex.indices, order)
    np.testing.assert_allclose(ex.activations, np.take_along_axis(values.T, order, 1), rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(ex.activations, axis=1) <= 0)
    if acts is None:
        assert np.all(ex.positions == -1)
        return
    w = acts.shape[2]
    np.testing.assert_array_equal(ex.positions[..., 0] * w + ex.positions[..., 1], np.take_along_axis(where.T, order, 1))
    u = 5  # the map really holds the value at the recorded position
    for j in range(K):
        r, c = ex.positions[u, j]
        assert acts[ex.indices[u, j], r, c, u] == pytest.approx(ex.activations[u, j], rel=1e-5, abs=1e-5)


class TinyFC:
    """A one-layer 'network' with an fc tap whose values tie often (pixels quantized; exact in float32)."""

    input_shape = (28, 28, 1)
    tap_names = ("fc",)

    def apply(self, params, x, taps):
        del taps
        return {"fc": jnp.floor(x.reshape(x.shape[0], -1)[:, params["pixels"]] / 64.0)}


def test_an_fc_layer_with_ties_ranks_like_a_stable_sort(digits):
    pixels = np.arange(300, 312)    # the middle rows of a digit
    tiny = Model("tiny_fc", TinyFC(), {"pixels": pixels}, {})
    ex = lx.top_exemplars(tiny, digits, "fc", k=K, batch_size=16)
    values = np.floor(np.asarray(digits).reshape(len(digits), -1)[:, pixels] / 64.0)
    assert len(np.unique(values[:, 0])) < 60      # ties are common
    order = np.argsort(-values, axis=0, kind="stable")[:K].T
    np.testing.assert_array_equal(ex.indices, order)
    np.testing.assert_array_equal(ex.activations, np.take_along_axis(values.T, order, 1))
    assert np.all(ex.positions == -1)


def test_a_unit_subset_keeps_the_layer_order_of_its_ids(model, digits):
    every = lx.top_exemplars(model, digits[:60], "conv2", k=3, batch_size=25)
    some = lx.top_exemplars(model, digits[:60], "conv2", k=3, batch_size=25, units=[7, 2])
    np.testing.assert_array_equal(some.indices, every.indices[[7, 2]])
    np.testing.assert_array_equal(some.positions, every.positions[[7, 2]])
    with pytest.raises(IndexError, match="out of range"):
        lx.top_exemplars(model, digits[:4], "conv2", units=[64])
    with pytest.raises(ValueError, match="k must be"):
        lx.top_exemplars(model, digits[:4], "conv2", k=0)


def test_merging_batches_breaks_ties_like_one_stable_sort():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 4, (97, 6)).astype(np.float32)   # many ties
    payload = rng.integers(0, 1000, (97, 6, 2))
    best_v, best_i, best_p = np.zeros((0, 6), np.float32), np.zeros((0, 6), np.int64), np.zeros((0, 6, 2), np.int64)
    for start in range(0, 97, 10):
        rows = np.arange(start, min(start + 10, 97))
        best_v, best_i, best_p = merge_top_k(best_v, best_i, values[rows], rows, 5, (best_p, payload[rows]))
    order = np.argsort(-values, axis=0, kind="stable")[:5]
    np.testing.assert_array_equal(best_i, order)
    np.testing.assert_array_equal(best_v, np.take_along_axis(values, order, 0))
    np.testing.assert_array_equal(best_p, np.take_along_axis(payload, order[..., None], 0))
    np.testing.assert_array_equal(top_k_rows(values[:, 2], 5), order[:, 2])


def test_parts_merged_in_order_equal_the_whole(model, digits):
    whole = lx.top_exemplars(model, digits[:90], "pool2", k=K, batch_size=15)
    parts = [lx.top_exemplars(model, digits[a:a + 30], "pool2", k=K, batch_size=15, first_index=a)
             for a in (0, 30, 60)]
    merged = lx.merge_exemplars(parts, K)
    for name in ("indices", "activations", "positions"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name))


# ----- receptive fields -------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer, positions", [
    ("conv1", [(0, 0), (13, 20), (27, 27)]),
    ("conv2", [(0, 0), (5, 9), (13, 13)]),
    ("pool2", [(0, 0), (3, 4), (6, 6)]),
    pytest.param("conv3:pre", [(0, 6), (3, 3)], marks=pytest.mark.slow),
])
def test_the_crop_is_the_input_region_that_can_move_the_unit(model, layer, positions):
    geometry = rf.receptive_field(model, layer)
    assert geometry is not None
    for row, col in positions:
        box = rf.field_box(geometry, row, col, 28, 28)
        assert box == rf.gradient_footprint(model, layer, row, col), (layer, row, col)
        boxes = rf.crop_boxes(model, layer, np.array([[row, col]]))
        assert tuple(boxes[0]) == box


def test_the_geometry_follows_the_config():
    # Embedded CaffeNet: conv1 k5 p2, pool 3/2, conv2 k5 p2, pool 3/2, conv3 k3 p1.
    assert rf.compose([(5, 1, 2)]) == rf.Geometry(5, 1, 2)
    assert rf.compose([(5, 1, 2), (3, 2, 0), (5, 1, 2)]) == rf.Geometry(15, 2, 6)
    assert rf.compose([(5, 1, 2), (3, 2, 0), (5, 1, 2), (3, 2, 0), (3, 1, 1)]) == rf.Geometry(27, 4, 10)


def test_fc_units_crop_the_whole_image_and_padding_reads_grey(model):
    assert rf.receptive_field(model, "fc6") is None
    assert tuple(rf.crop_boxes(model, "fc6", np.array([[-1, -1]]))[0]) == (0, 0, 28, 28)
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    crop = rf.padded_crop(image, (-1, 2, 2, 5))
    np.testing.assert_array_equal(crop, [[128, 128, 128], [2, 3, 128], [6, 7, 128]])


# ----- the resumable job ------------------------------------------------------------------------------------

def _job(model, out, **kw):
    args = dict(k=4, batch_size=20, chunk_images=40, progress=False)
    args.update(kw)
    return wx.run_exemplars(model, wx.digits_source(120), "conv2", out, **args)


def test_a_resumed_job_equals_an_uninterrupted_one(model, tmp_path):
    first = _job(model, tmp_path / "a", max_chunks=1)
    assert (first.chunks, first.computed, first.finished) == (3, 1, False)
    assert not (tmp_path / "a" / wx.EXEMPLARS_FILE).exists()
    second = _job(model, tmp_path / "a")
    assert (second.computed, second.finished) == (2, True)
    _job(model, tmp_path / "b")
    for name in (wx.EXEMPLARS_FILE, "results.jsonl", "units/unit_00010.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # The job equals the in-memory ranking of the same images.
    direct = lx.top_exemplars(model, pp.to_network(shipped.reference_digits()[0][:120], model.preprocessing),
                              "conv2", k=4, batch_size=20)
    data = wx.load_exemplars(tmp_path / "a")
    np.testing.assert_array_equal(data["indices"], direct.indices)
    np.testing.assert_array_equal(data["positions"], direct.positions)
    rows = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    assert [r["unit"] for r in rows] == list(range(64))
    assert rows[3]["indices"] == data["indices"][3].tolist() and rows[3]["boxes"] == data["boxes"][3].tolist()
    with Image.open(tmp_path / "a" / rows[3]["strip"]) as strip:
        assert strip.height >= wx.STRIP_HEIGHT
    assert "units/unit_00003.png" in (tmp_path / "a" / "index.html").read_text()
    assert _job(model, tmp_path / "a").computed == 0   # finished: nothing recomputed


def test_a_folder_of_another_job_is_refused(model, tmp_path):
    _job(model, tmp_path / "a", max_chunks=1)
    with pytest.raises(SweepError, match="different exemplars job"):
        _job(model, tmp_path / "a", k=5)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SweepError, match="not empty"):
        _job(model, tmp_path / "other")


def test_a_folder_of_images_is_read_through_the_card(model, tmp_path):
    digits = shipped.reference_digits()[0][:12]
    for i, d in enumerate(digits):
        Image.fromarray(np.pad(d, 4)).convert("RGB").save(tmp_path / f"img_{i:02d}.png")  # 36x36 RGB
    source = wx.folder_source(tmp_path, model)
    assert len(source) == 12 and source.read(0, 2).shape == (2, 28, 28)
    assert source.names[0] == "img_00.png"


# ----- the exemplars verb -----------------------------------------------------------------------------------

def test_the_exemplars_verb_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "ex"
    assert cli.main(["exemplars", "--layer", "conv3", "--units", "0-4", "--k", "3", "--limit", "40",
                     "--batch-size", "20", "--out", str(out)]) == 0
    assert "exemplars.npz" in capsys.readouterr().out
    data = wx.load_exemplars(out)
    assert data["indices"].shape == (5, 3) and data["boxes"].shape == (5, 3, 4)
    assert sorted(p.name for p in (out / "units").iterdir()) == [f"unit_{u:05d}.png" for u in range(5)]
    assert (out / "index.html").exists() and len((out / "results.jsonl").read_text().splitlines()) == 5


@pytest.mark.parametrize("argv, needles", [
    (["--layer", "conv3", "--k", "0"], ["--k", "between 1 and"]),
    (["--layer", "conv9"], ["unknown tap 'conv9'"]),
    (["--layer", "conv3", "--images", "{missing}"], ["does not exist", "--images"]),
    (["--layer", "conv3", "--units", "90-100"], ["unit 96 is out of range"]),
    (["--layer", "conv3", "--batch-size", "-2"], ["--batch-size"]),
    (["--layer", "conv3", "--out", "{file}"], ["is a file"]),
])
def test_bad_exemplars_arguments_are_one_line(tmp_path, capsys, argv, needles):
    (tmp_path / "afile").write_text("x")
    subst = {"{missing}": str(tmp_path / "nope"), "{file}": str(tmp_path / "afile")}
    argv = ["exemplars", *[subst.get(a, a) for a in argv]]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    line = faults.one_line_error(capsys.readouterr().err, "jaxviz exemplars: ")
    for needle in needles:
        assert needle in line, (needle, line)
    assert not (tmp_path / "out").exists()


def test_a_folder_of_another_exemplars_job_is_one_line(tmp_path, capsys):
    out = str(tmp_path / "ex")
    base = ["exemplars", "--layer", "conv1", "--k", "2", "--limit", "10", "--out", out]
    assert cli.main(base) == 0
    capsys.readouterr()
    assert cli.main(base[:4] + ["3"] + base[5:]) == 2
    line = faults.one_line_error(capsys.readouterr().err, "jaxviz exemplars: ")
    assert "different exemplars job" in line
