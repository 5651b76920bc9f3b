"""Training code of the embedded pair on tiny runs: the IDX reader, and losses that go down."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from jaxviz.models.caffenet import CaffeNet, CaffeNetConfig
from jaxviz.models.generator import GeneratorConfig
from jaxviz.training import classifier as cls_train
from jaxviz.training import generator as gen_train
from jaxviz.training import mnist
from jaxviz.training.embedded_pair import code_bounds


def _write_idx(folder, images, labels):
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, *images.shape) + images.tobytes())
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)) + labels.tobytes())


def test_idx_roundtrip_and_split(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    _write_idx(tmp_path, images, labels)
    got = mnist.load_idx(tmp_path)
    np.testing.assert_array_equal(got.images, images)
    np.testing.assert_array_equal(got.labels, labels)
    train, held = mnist.split(got, 5)
    assert len(train.labels) == 5 and len(held.labels) == 2
    np.testing.assert_array_equal(held.images, images[5:])


def test_idx_rejects_wrong_magic(tmp_path):
    _write_idx(tmp_path, np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").rename(tmp_path / "x.gz")
    (tmp_path / "t10k-images-idx3-ubyte.gz").rename(tmp_path / "t10k-labels-idx1-ubyte.gz")
    (tmp_path / "x.gz").rename(tmp_path / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(ValueError, match="magic"):
        mnist.load_idx(tmp_path)


def test_real_mnist_test_set(shared_data):
    digits = mnist.load_idx(shared_data("mnist-t10k"))
    assert digits.images.shape == (10000, 28, 28)
    assert digits.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(digits.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _toy_digits(n=128, seed=0):
    """Bars at a label-dependent row: learnable in a few steps, no shared data needed."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.int32)
    images = np.zeros((n, 28, 28), np.uint8)
    for i, y in enumerate(labels):
        images[i, 3 + 2 * y: 5 + 2 * y, 4:24] = 255
    images = np.clip(images + rng.integers(0, 40, images.shape), 0, 255).astype(np.uint8)
    return images, labels


@pytest.mark.slow
def test_classifier_loss_decreases():
    images, labels = _toy_digits()
    x = cls_train.to_network(images, images.mean())
    cfg = cls_train.ClassifierTrainConfig(steps=40, batch_size=32, init_batch=64, max_shift=1)
    _, hist = cls_train.train_classifier(x, labels, CaffeNetConfig.mnist(), cfg, seed=0,
                                         log=lambda s: None, log_every=10)
    losses = [loss for _, loss in hist]
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.slow
def test_generator_loss_decreases():
    images, labels = _toy_digits()
    x = cls_train.to_network(images, images.mean())
    c_cfg = cls_train.ClassifierTrainConfig(steps=20, batch_size=32, init_batch=64)
    c_params, _ = cls_train.train_classifier(x, labels, CaffeNetConfig.mnist(), c_cfg, seed=0,
                                             log=lambda s: None)
    clf = CaffeNet(CaffeNetConfig.mnist())
    g_cfg = gen_train.GeneratorTrainConfig(steps=40, batch_size=32, init_batch=64)
    _, hist = gen_train.train_generator(x, clf, c_params, GeneratorConfig.mnist(256), g_cfg, seed=0,
                                        log=lambda s: None, log_every=10)
    totals = [parts["total"] for _, parts in hist]
    assert totals[-1] < 0.7 * totals[0], totals


def test_code_bounds_are_three_sigma():
    codes = np.abs(np.random.default_rng(0).normal(size=(1000, 4))) * np.array([1.0, 2.0, 0.0, 5.0])
    np.testing.assert_allclose(code_bounds(codes), 3 * codes.std(axis=0), rtol=1e-6)
