"""The embedded judge (``load("lenet")``): an independent LeNet on the embedded classifier's input space.

Shipped-file tests read only the package's files (no training, no shared data). Thresholds sit under the
figures measured when the shipped judge was trained (TRAINING.md, "The judge"): on the 1000 reference
digits accuracy 0.994 (6 wrong) and agreement with the embedded classifier 0.996; on 100 pure
N(0, 30^2) images, top probability 0.41 on average and no label more than 28 times.
"""

from __future__ import annotations

import gzip
import pathlib
import struct
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz.models import LeNet, LeNetConfig, lenet_tap_names, load
from jaxviz.models import preprocessing as pp
from jaxviz.models import shipped
from jaxviz.models.lenet import lenet_tap_shapes
from jaxviz.training import judge, mnist

MIN_REFERENCE_ACCURACY = 0.98       # measured 0.994
MIN_AGREEMENT_WITH_CLASSIFIER = 0.98  # measured 0.996
MAX_NOISE_MEAN_TOP_PROBABILITY = 0.7  # measured 0.41
MAX_NOISE_SAME_LABEL = 60             # of 100; measured 28
MAX_JUDGE_BYTES = 2_000_000


@pytest.fixture(scope="module")
def lenet():
    return load("lenet")


@pytest.fixture(scope="module")
def reference(lenet):
    images, labels = shipped.reference_digits()
    return pp.to_network(images, lenet.preprocessing), labels


def _labels(model, x, tap):
    fn = jax.jit(lambda p, xs: model.apply(p, xs, (tap,))[tap])
    return np.concatenate([np.asarray(fn(model.params, x[i:i + 500])).argmax(-1) for i in range(0, len(x), 500)])


def test_reference_accuracy_and_agreement_with_the_embedded_classifier(lenet, reference):
    x, labels = reference
    assert x.shape == (1000, 28, 28, 1)
    pred = _labels(lenet, x, "ip2")
    assert np.mean(pred == labels) >= MIN_REFERENCE_ACCURACY
    classifier_pred = _labels(load("caffenet"), x, "fc8")
    assert np.mean(pred == classifier_pred) >= MIN_AGREEMENT_WITH_CLASSIFIER


def test_pure_noise_gets_no_confident_single_label(lenet):
    noise = np.random.default_rng(1000).normal(0.0, 30.0, (100, 28, 28, 1)).astype(np.float32)
    prob = np.asarray(lenet(jnp.asarray(noise), taps=("prob",))["prob"])
    assert prob.max(-1).mean() < MAX_NOISE_MEAN_TOP_PROBABILITY
    assert np.bincount(prob.argmax(-1), minlength=10).max() <= MAX_NOISE_SAME_LABEL


def test_card_split_excludes_the_reference_digits(lenet):
    card = lenet.metadata
    assert card["architecture"] == "lenet" and card["training"]["seed"] == 0
    training = card["training"]
    trained = set().union(*(range(a, b) for a, b in training["train_ranges"]))
    assert len(trained) == training["train_examples"] == 7000
    assert trained.isdisjoint(range(8000, 9000)) and trained <= set(range(10000))
    assert training["reference_range"] == [8000, 9000]
    assert set(judge.train_indices().tolist()) == trained  # the card says what the script trains on
    with np.load(shipped.embedded_dir("lenet").parent / shipped.REFERENCE_DIGITS_FILE) as f:
        np.testing.assert_array_equal(f["indices"], np.arange(8000, 9000))
        assert f["images"].shape == (1000, 28, 28) and f["images"].dtype == np.uint8
        assert f["labels"].shape == (1000,)


def test_same_input_space_as_the_embedded_classifier(lenet):
    ours, theirs = lenet.preprocessing, load("caffenet").preprocessing
    assert ours["channel_order"] == theirs["channel_order"] == "gray"
    assert ours["mean"] == theirs["mean"] and ours["pixel_scale"] == theirs["pixel_scale"]
    assert abs(ours["mean"][0] - 33.1726) < 1e-4
    assert lenet.input_shape == (28, 28, 1)


def test_shipped_judge_is_small_and_carries_no_machine_paths():
    folder = shipped.embedded_dir("lenet")
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < MAX_JUDGE_BYTES
    # the places a training run could have leaked into the files: this checkout and the temporary folder
    places = [str(pathlib.Path(__file__).resolve().parents[1]).encode(), tempfile.gettempdir().encode()]
    assert not [p for p in files if any(place in p.read_bytes() for place in places)]


def test_reference_digits_are_t10k_8000_to_8999(shared_data):
    digits = mnist.load_idx(shared_data("mnist-t10k"))
    images, labels = shipped.reference_digits()
    np.testing.assert_array_equal(images, digits.images[8000:9000])
    np.testing.assert_array_equal(labels, digits.labels[8000:9000])


def test_taps_shapes_and_parameter_layout(lenet):
    x = jnp.zeros((2, 28, 28, 1))
    acts = lenet(x, taps=lenet_tap_names())
    want = lenet_tap_shapes(LeNetConfig())
    assert set(acts) == set(lenet_tap_names())
    assert {k: v.shape[1:] for k, v in acts.items()} == want
    assert want["pool2"] == (4, 4, 50) and want["ip1"] == (500,) and want["ip2"] == (10,)
    assert lenet(x, taps=("ip2",))["ip2"].shape == (2, 10)
    np.testing.assert_allclose(acts["ip1"], np.maximum(acts["ip1:pre"], 0))
    np.testing.assert_allclose(acts["prob"], jax.nn.softmax(acts["ip2"]), rtol=1e-6, atol=1e-7)
    shapes = jax.tree_util.tree_map(np.shape, dict(lenet.params))
    assert shapes == {"conv1": {"kernel": (5, 5, 1, 20), "bias": (20,)},
                      "conv2": {"kernel": (5, 5, 20, 50), "bias": (50,)},
                      "ip1": {"kernel": (800, 500), "bias": (500,)},
                      "ip2": {"kernel": (500, 10), "bias": (10,)}}


def test_forward_stops_at_the_deepest_tap():
    net = LeNet(LeNetConfig())
    variables = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), taps=("pool2",))
    assert set(variables["params"]) == {"conv1", "conv2"}
    out = net.apply(variables, jnp.zeros((1, 28, 28, 1)), taps="conv1")  # a lone string is one tap
    assert set(out) == {"conv1"}
    with pytest.raises(ValueError, match="unknown tap 'fc8'.*ip2"):
        net.apply(variables, jnp.zeros((1, 28, 28, 1)), taps=("fc8",))
    with pytest.raises(ValueError, match="1 channels"):
        net.apply(variables, jnp.zeros((1, 28, 28, 3)), taps=("conv1",))


def test_config_round_trip_and_checks():
    cfg = LeNetConfig(ip1=64)
    assert LeNetConfig.from_dict(cfg.to_dict()) == cfg and hash(cfg) == hash(LeNetConfig(ip1=64))
    with pytest.raises(ValueError, match="positive"):
        LeNetConfig(conv1=0)
    with pytest.raises(ValueError, match="tap 'conv2' would have shape"):
        LeNetConfig(input_size=12)


def test_training_refuses_a_folder_that_is_not_fresh(tmp_path, capsys):
    (tmp_path / "something").write_text("x")
    assert judge.main(["--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert judge.fresh_folder(tmp_path / "new").is_dir()


def _write_toy_t10k(folder, n=10000, seed=0):
    """A t10k-shaped IDX pair of learnable toy digits (a bar at a label-dependent row), no shared data."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 30, (n, 28, 28)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, 3 + 2 * y: 5 + 2 * y, 4:24] = 255
    folder.mkdir()
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, *images.shape) + images.tobytes())
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + labels.tobytes())
    return images, labels


@pytest.mark.slow
def test_training_a_few_steps_writes_a_folder_that_loads(tmp_path):
    images, labels = _write_toy_t10k(tmp_path / "data")
    out = tmp_path / "judge"
    assert judge.main(["--data", str(tmp_path / "data"), "--out", str(out), "--steps", "30",
                       "--batch-size", "32"]) == 0
    model = load("lenet", out)
    card = model.metadata
    assert card["training"]["hyperparameters"]["steps"] == 30 and card["training"]["loss_history"]
    assert card["preprocessing"]["mean"] == load("caffenet").preprocessing["mean"]
    with np.load(out / "reference_digits.npz") as f:
        np.testing.assert_array_equal(f["indices"], np.arange(8000, 9000))
        np.testing.assert_array_equal(f["images"], images[8000:9000])
    x = pp.to_network(images[8000:8064], model.preprocessing)
    assert model(jnp.asarray(x), taps=("ip2",))["ip2"].shape == (64, 10)
    assert (out / "TRAINING.md").read_text().startswith("\n## The judge")


def test_a_damaged_judge_is_an_error_and_a_missing_one_is_no_judge(tmp_path, monkeypatch):
    import shutil

    from jaxviz.models import checkpoint
    from jaxviz.scoring import defaults

    shutil.copytree(shipped.embedded_dir("lenet"), tmp_path / "judge")
    monkeypatch.setattr(defaults, "embedded_dir", lambda architecture: tmp_path / "judge")
    monkeypatch.setattr(defaults, "load", lambda architecture: load(architecture, tmp_path / "judge"))
    assert defaults.embedded_judge() is not None
    card = tmp_path / "judge" / "metadata.json"
    card.write_text(card.read_text().replace('"seed": 0', '"seed": 1', 1))
    with pytest.raises(checkpoint.CheckpointError, match="metadata.json"):
        defaults.embedded_judge()  # scoring without the second opinion would hide the damage
    card.unlink()
    assert defaults.embedded_judge() is None
