"""Log-softmax selectivity versus raw activation, measured on really trained LeNets (survey seed Table 1).

Pixel-space AM of each of the 10 classes, starting from real test digits of *other* classes, with the
same small step budget: raw-activation ascent tends to raise competing logits too, while the exact
log-softmax gradient also pushes the others down, so the target ends top-ranked more often.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz.core import objectives as O
from jaxviz.core import operators
from jaxviz.core.loop import Method
from jaxviz.core.updates import normalized_gradient_ascent
from jaxviz.core.params import Pixels
from jaxviz.training.mnist import load_idx
from jaxviz.core.run import optimize_batch as visualize_batch
from weights_convert import load_caffe

N_STARTS = 40  # four per class


def top_ranked_fraction(net, objective, images, targets) -> float:
    """Fraction of runs whose target class has the highest logit after 10 normalized ascent steps."""
    method = Method(10, normalized_gradient_ascent(0.01), operator=operators.clip_value(0.0, 1.0))
    keys = jax.random.split(jax.random.key(0), len(targets))
    result = visualize_batch(net, objective, Pixels((28, 28, 1)), keys=keys, targets=targets, method=method,
                             z0=images[:, None])
    assert np.all(np.asarray(result.failed_step) == -1)
    return float(np.mean(np.asarray(result.rank).ravel() == 0))


@pytest.mark.parametrize("version", ["lenet-mnist-v2", "lenet-mnist-v1"])
def test_log_softmax_leaves_the_target_top_ranked_more_often(shared_data, version):
    folder = shared_data(version)
    net = load_caffe(folder / "lenet.prototxt", folder / "lenet_iter_10000.caffemodel")
    digits = load_idx(shared_data("mnist-t10k"))
    images = jnp.asarray(digits.images[:N_STARTS, :, :, None], jnp.float32) / 256.0  # LeNet's input scale
    labels = digits.labels[:N_STARTS]
    # Each start is asked for a class other than its own, cycling through all ten.
    targets = jnp.asarray((labels + 1 + np.arange(N_STARTS) % 9) % 10, jnp.int32)
    assert set(np.asarray(targets).tolist()) == set(range(10))
    raw = top_ranked_fraction(net, O.unit("ip2"), images, targets)
    selective = top_ranked_fraction(net, O.log_softmax("ip2"), images, targets)
    print(f"{version}: target top-ranked after AM: raw {raw:.3f}, log-softmax {selective:.3f}")
    assert selective > raw
    assert selective >= 0.8
