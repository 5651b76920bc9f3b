"""The shipped embedded pair (no training here): held-out accuracy, G(E(x)) label agreement, bounds, demo.

Thresholds sit under the figures measured when the shipped weights were trained (TRAINING.md beside them):
on the 2000 held-out digits, accuracy 0.9945 (11 wrong) and label agreement of G(E(x)) 0.9925 (15 wrong);
on the 100 shipped demo digits, 99/100 and 98/100. The margins (19 and 35 digits of 2000, 4 of 100) absorb
float differences across machines, batch sizes and JAX versions, which flip at most a few borderline
digits; a broken layer, layout, preprocessing or checkpoint costs far more than that.
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest

from jaxviz.models import preprocessing as pp
from jaxviz.models import shipped
from jaxviz.workflows.demo import make_inversion, run_reconstructions
from jaxviz.models import load
from jaxviz.models.shipped import embedded_dir
from jaxviz.training import mnist

N_TRAIN = 8000                  # the split the shipped weights were trained with (TRAINING.md)
MIN_HELDOUT_ACCURACY = 0.985    # measured 0.9945
MIN_HELDOUT_AGREEMENT = 0.975   # measured 0.9925
MIN_DEMO_ACCURACY = 0.95        # measured 0.99
MIN_DEMO_AGREEMENT = 0.95       # measured 0.98
MAX_SHIPPED_BYTES = 5_000_000


@pytest.fixture(scope="module")
def pair():
    clf, gen = load("caffenet"), load("generator")
    return clf, gen, make_inversion(clf, gen)


def _invert_all(pair, x: np.ndarray, batch: int = 500):
    """(labels of x, labels of G(E(x))) over x in fixed batches (one compile)."""
    clf, gen, invert = pair
    px, pr = [], []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        _, a, b = jax.device_get(invert(clf.params, gen.params, chunk))
        px.append(a), pr.append(b)
    return np.concatenate(px), np.concatenate(pr)


@pytest.fixture(scope="module")
def heldout():
    from tests.conftest import shared_path

    digits = mnist.load_idx(shared_path("mnist-t10k"))
    return mnist.split(digits, N_TRAIN)[1]


def test_shipped_cards_describe_training():
    for arch in ("caffenet", "generator"):
        card = load(arch).metadata
        assert card["architecture"] == arch
        assert card["preprocessing"]["channel_order"] == "gray"
        training = card["training"]
        assert training["seed"] == 0 and "first 8000" in training["split"]
        assert training["seconds"] > 0 and training["metrics"]


def test_shipped_files_are_small_and_carry_no_machine_paths():
    root = embedded_dir("caffenet").parent
    files = [p for p in root.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < MAX_SHIPPED_BYTES
    here = str(pathlib.Path(__file__).resolve().parents[1]).encode()  # this checkout
    assert not [p for p in files if here in p.read_bytes()]


def test_heldout_accuracy_and_label_agreement(pair, heldout):
    x = pp.to_network(heldout.images, pair[0].metadata["preprocessing"])
    pred_x, pred_rec = _invert_all(pair, x)
    accuracy = np.mean(pred_x == heldout.labels)
    agreement = np.mean(pred_rec == heldout.labels)
    assert accuracy >= MIN_HELDOUT_ACCURACY, accuracy
    assert agreement >= MIN_HELDOUT_AGREEMENT, agreement
    # the card's own figures are the ones measured here (same split, same weights)
    card = pair[0].metadata["training"]["metrics"]
    assert accuracy == pytest.approx(card["heldout_accuracy"], abs=2e-3)


def test_shipped_demo_digits_need_no_shared_data(pair):
    images, labels = shipped.heldout_digits()
    assert images.shape == (100, 28, 28) and images.dtype == np.uint8 and labels.shape == (100,)
    x = pp.to_network(images, pair[0].metadata["preprocessing"])
    pred_x, pred_rec = _invert_all(pair, x, batch=100)
    assert np.mean(pred_x == labels) >= MIN_DEMO_ACCURACY
    assert np.mean(pred_rec == labels) >= MIN_DEMO_AGREEMENT


def test_code_bounds_match_generator_code():
    bounds = shipped.embedded_code_bounds()
    gen = load("generator")
    assert bounds.shape == (gen.config.code_size,) and bounds.dtype == np.float32
    assert np.all(np.isfinite(bounds)) and np.all(bounds >= 0)
    # zero bounds are the fc6 units that never fire on training digits (33 of 256 when shipped)
    assert np.mean(bounds > 0) > 0.8


def test_real_codes_mostly_lie_within_bounds(pair):
    clf = pair[0]
    images, _ = shipped.heldout_digits()
    x = pp.to_network(images, clf.metadata["preprocessing"])
    codes = np.asarray(clf(x, ("fc6",))["fc6"])
    assert np.mean(codes <= shipped.embedded_code_bounds()) > 0.95


def test_demo_writes_sheet_and_summary(tmp_path):
    out = run_reconstructions(tmp_path / "demo")
    from PIL import Image

    sheet = Image.open(out / "reconstructions.png")
    assert sheet.width > 20 * 56 and sheet.height > 10 * 56
    summary = json.loads((out / "summary.json").read_text())
    assert summary["digits"] == 100 and summary["label_agreement"] >= MIN_DEMO_AGREEMENT
