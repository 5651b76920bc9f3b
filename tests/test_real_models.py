"""Real Caffe models built from their deploy prototxts reproduce the figures their SOURCE.md files state:
LeNet accuracy and loss on MNIST, FSRCNN's Set5 PSNR, CIFAR-10 nets layer by layer against OpenCV (at the
declared and at other input sizes), ultraface's depthwise backbone against OpenCV and its Permute error."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from PIL import Image

from jaxviz.training.mnist import load_idx
from tests.helpers import caffe_reference as ref
from tests.helpers.matlab_image import imresize, modcrop, psnr, rgb2y
from tests.helpers.prototxt_parity import opencv_outputs, relative_errors
from weights_convert.caffemodel import read_caffemodel
from weights_convert.errors import UnsupportedLayerError
from weights_convert.netspec import attach_weights
from weights_convert.network.blobs import params_from_blobs
from weights_convert.network.build import build_network
from weights_convert.network.load import from_caffe
from weights_convert.prototxt import read_prototxt

MAX_REL_ERR = 1e-4


def _mnist(shared_data, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` t10k images as NHWC float32 scaled by 1/256 (LeNet's transform_param) and labels."""
    digits = load_idx(shared_data("mnist-t10k"))
    x = digits.images[:n].astype(np.float32)[..., None] * np.float32(0.00390625)
    return x, digits.labels[:n].astype(np.int64)


def _logits(net, params, x: np.ndarray) -> np.ndarray:
    run = jax.jit(lambda p, x: net.apply(p, x, taps="ip2")["ip2"])
    return np.concatenate([np.asarray(run(params, x[i:i + 1000])) for i in range(0, len(x), 1000)])


def _softmax_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits.astype(np.float64)
    log_norm = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    return float(np.mean(log_norm - z[np.arange(len(labels)), labels]))


# ----- LeNet -------------------------------------------------------------------------------------------

def test_lenet_v2_first_5000_accuracy_and_loss(shared_data):
    folder = shared_data("lenet-mnist-v2")
    net, params = from_caffe(folder / "lenet.prototxt", folder / "lenet_iter_10000.caffemodel")
    assert net.input_shape == (28, 28, 1) and net.outputs == ("prob",)
    x, labels = _mnist(shared_data, 5000)
    logits = _logits(net, params, x)
    np.testing.assert_allclose(logits[0], [-1.4734, -0.3376, 0.7188, 3.2953, -2.5603, -1.7012, -9.7945,
                                           13.7421, -2.3934, 2.3056], atol=1e-4)
    correct = int((logits.argmax(1) == labels).sum())
    loss = _softmax_loss(logits, labels)
    print(f"LeNet V2, first 5000: accuracy {correct / 5000:.4f}, loss {loss:.8f}")
    assert correct == 4930  # 98.6 %
    assert abs(loss - 0.0444183) <= 1e-6


def test_lenet_v1_all_10000_wrong_indices(shared_data):
    folder = shared_data("lenet-mnist-v1")
    net, params = from_caffe(folder / "lenet.prototxt", folder / "lenet_iter_10000.caffemodel")
    x, labels = _mnist(shared_data, 10000)
    logits = _logits(net, params, x)
    np.testing.assert_allclose(logits[0], [-3.8173, -1.0166, 0.5979, 5.2876, -3.1753, -2.2874, -11.7608,
                                           14.8582, -1.2083, 2.9904], atol=1e-4)
    wrong = np.flatnonzero(logits.argmax(1) != labels).tolist()
    print(f"LeNet V1, all 10000: {10000 - len(wrong)} right")
    source = (shared_data("lenet-mnist-v1") / "SOURCE.md").read_text()
    listed = source.split("all 95 of them:")[1].split("\n\n")[0].split()
    assert wrong == [int(i) for i in listed] and len(wrong) == 95


def test_lenet_train_test_prototxt_builds_without_data_layers(shared_data):
    folder = shared_data("lenet-mnist-v2")
    spec = attach_weights(read_prototxt(folder / "lenet_train_test.prototxt"),
                          read_caffemodel(folder / "lenet_iter_10000.caffemodel"))
    net = build_network(spec, input_shapes={"data": (1, 1, 28, 28)})
    assert [s.type for s in net.steps] == ["Convolution", "Pooling", "Convolution", "Pooling", "InnerProduct",
                                           "ReLU", "InnerProduct"]
    x, _ = _mnist(shared_data, 1)
    logits = net.apply(params_from_blobs(spec, net), x, taps="ip2")["ip2"]
    np.testing.assert_allclose(logits[0, 7], 13.7421, atol=1e-4)


# ----- CIFAR-10 (V1 files) -----------------------------------------------------------------------------

CIFAR_SHAPES = {
    "cifar10_full": {"conv1": (32, 32, 32), "pool1": (16, 16, 32), "norm1": (16, 16, 32), "conv2": (16, 16, 32),
                     "pool2": (8, 8, 32), "norm2": (8, 8, 32), "conv3": (8, 8, 64), "pool3": (4, 4, 64),
                     "ip1": (10,), "prob": (10,)},
    "cifar10_quick": {"conv1": (32, 32, 32), "pool1": (16, 16, 32), "conv2": (16, 16, 32), "pool2": (8, 8, 32),
                      "conv3": (8, 8, 64), "pool3": (4, 4, 64), "ip1": (64,), "ip2": (10,), "prob": (10,)},
}
CIFAR_WEIGHTS = {"cifar10_full": "cifar10_full_iter_70000.caffemodel",
                 "cifar10_quick": "cifar10_quick_iter_5000.caffemodel"}


def _cifar_input(h: int, w: int, seed: int = 0) -> np.ndarray:
    # Raw-pixel scale inputs (the models take 0-255 RGB minus a mean), NCHW as OpenCV wants.
    return np.random.default_rng(seed).uniform(-128, 128, (2, 3, h, w)).astype(np.float32)


@pytest.mark.parametrize("model", ["cifar10_full", "cifar10_quick"])
def test_cifar10_shapes_and_every_layer_equal_opencv(shared_data, model):
    folder = shared_data("cifar10-v1")
    proto, weights = folder / f"{model}.prototxt", folder / CIFAR_WEIGHTS[model]
    net, params = from_caffe(proto, weights)
    shapes = net.tap_shapes()
    assert {k: shapes[k] for k in CIFAR_SHAPES[model]} == CIFAR_SHAPES[model]
    assert net.param_shapes["ip1"]["kernel"] == (1024, CIFAR_SHAPES[model]["ip1"][0])
    x = _cifar_input(32, 32)
    reference = opencv_outputs(proto, weights, x)
    errors = relative_errors(net, params, x, reference)
    assert set(errors) == set(reference), set(reference) - set(errors)
    assert max(errors.values()) <= MAX_REL_ERR, errors


def test_cifar10_full_at_other_sizes_with_ceil_pooling(shared_data):
    """34 x 33 pools to 17 x 16 -> 8 x 8 -> 4 x 4 only with Caffe's ceil rounding, so ip1 still fits."""
    folder = shared_data("cifar10-v1")
    proto, weights = folder / "cifar10_full.prototxt", folder / CIFAR_WEIGHTS["cifar10_full"]
    net, params = from_caffe(proto, weights)
    x = _cifar_input(34, 33, seed=1)
    reference = opencv_outputs(proto, weights, x)
    assert reference["pool1"].shape == (2, 32, 17, 17 - 1)
    errors = relative_errors(net, params, x, reference)
    assert set(errors) == set(reference) and max(errors.values()) <= MAX_REL_ERR, errors

    # The same forward pass written as Caffe's loops (tests/helpers/caffe_reference), float64.
    blobs = read_caffemodel(weights).blobs_by_layer()

    def conv(h, name):
        w, b = blobs[name]
        return ref.conv(h, w, b.reshape(-1), 1, 2)

    h = ref.max_pool(conv(x[:1].astype(np.float64), "conv1"), 3, 2)
    h = ref.lrn_within(np.maximum(h, 0), 3, 5e-5, 0.75)
    h = ref.lrn_within(ref.ave_pool(np.maximum(conv(h, "conv2"), 0), 3, 2), 3, 5e-5, 0.75)
    h = ref.ave_pool(np.maximum(conv(h, "conv3"), 0), 3, 2)
    ip1 = ref.inner_product(h, blobs["ip1"][0].reshape(10, 1024), blobs["ip1"][1].reshape(-1))
    ours = net.apply(params, x[:1].transpose(0, 2, 3, 1), taps=("pool3", "ip1"))
    np.testing.assert_allclose(ref.nchw(np.asarray(ours["pool3"])), h, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(np.asarray(ours["ip1"]), ip1, rtol=1e-4, atol=1e-3)

    # Larger, non-square maps run the convolutional part (ip1 needs 4 x 4).
    big = _cifar_input(57, 80, seed=2)
    reference = opencv_outputs(proto, weights, big, ["conv1", "pool1", "norm1", "conv2", "pool2", "norm2",
                                                     "conv3", "pool3"])
    errors = relative_errors(net, params, big, reference)
    assert len(errors) == 8 and max(errors.values()) <= MAX_REL_ERR, errors


# ----- FSRCNN x3 on Set5 ----------------------------------------------------------------------------------

SET5_FSRCNN = {"baby": 34.74, "bird": 34.54, "butterfly": 27.04, "head": 33.53, "woman": 30.59}


def test_fsrcnn_x3_beats_bicubic_on_set5(shared_data):
    folder = shared_data("fsrcnn-x3")
    net, params = from_caffe(folder / "FSRCNN_mat.prototxt", folder / "snapshot_iter_2546000.caffemodel")
    assert net.input_shape == (7, 7, 1)  # declared 7x7; any size runs
    run = jax.jit(lambda p, x: net.apply(p, x)["deconv"])
    ours, bicubic = {}, {}
    for name in SET5_FSRCNN:
        rgb = np.asarray(Image.open(folder / "Set5" / f"{name}_GT.bmp").convert("RGB"))
        gt = modcrop(rgb2y(rgb), 3).astype(np.float64) / 255.0
        lr = imresize(gt, 1 / 3)
        # Trained through MATLAB (column-major): Caffe saw transposed images.
        sr = np.asarray(run(params, lr.T[None, :, :, None].astype(np.float32)))[0, :, :, 0].T
        h, w = gt.shape
        assert sr.shape == (h - 2, w - 2)  # 3 * (h / 3) - 2
        truth = gt[3:h - 3, 3:w - 3]  # 3 px shaved; output pixel (i, j) sits at ground truth (i + 2, j + 2)
        ours[name] = psnr(sr[1:h - 5, 1:w - 5], truth)
        bicubic[name] = psnr(imresize(lr, 3)[3:h - 3, 3:w - 3], truth)
    mean_ours, mean_bicubic = np.mean(list(ours.values())), np.mean(list(bicubic.values()))
    print(f"Set5 x3 Y-PSNR: FSRCNN {mean_ours:.3f} dB, bicubic {mean_bicubic:.3f} dB; per image "
          + ", ".join(f"{k} {v:.2f}" for k, v in ours.items()))
    assert abs(mean_bicubic - 30.39) <= 0.03
    assert abs(mean_ours - 32.09) <= 0.03
    for name, stated in SET5_FSRCNN.items():
        assert abs(ours[name] - stated) <= 0.03, (name, ours[name])


# ----- ultraface (depthwise convolutions, SSD Permute) -------------------------------------------------------

def test_ultraface_permute_is_a_clear_build_error(shared_data):
    folder = shared_data("ultraface-slim320")
    with pytest.raises(UnsupportedLayerError) as info:
        from_caffe(folder / "slim-320.prototxt", folder / "slim-320.caffemodel")
    assert info.value.layer == "233"
    assert "'Permute'" in str(info.value) and "slim-320.prototxt" in str(info.value)


def test_ultraface_depthwise_backbone_equals_opencv(shared_data):
    folder = shared_data("ultraface-slim320")
    proto, weights = folder / "slim-320.prototxt", folder / "slim-320.caffemodel"
    spec = attach_weights(read_prototxt(proto), read_caffemodel(weights))
    downstream: set[str] = set()  # blobs computed from a Permute
    for layer in spec.layers:
        if layer.type == "Permute" or downstream & set(layer.bottoms):
            downstream |= set(layer.tops)
    outputs = [t for l in spec.layers if l.type != "Input" for t in l.tops if t not in downstream]
    net = build_network(spec, outputs=outputs)
    depthwise = [s for s in net.steps if s.type == "Convolution" and s.param_shapes["kernel"][2] == 1
                 and s.param_shapes["kernel"][3] > 1]
    assert len(depthwise) == 19 and {s.param_shapes["kernel"][3] for s in depthwise} == {16, 32, 64, 128, 256}
    params = params_from_blobs(spec, net)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 240, 320)).astype(np.float32)  # (x - 127) / 128 range
    reference = opencv_outputs(proto, weights, x, [s.name for s in net.steps])
    errors = relative_errors(net, params, x, reference)
    assert len(errors) == len(net.steps) and max(errors.values()) <= MAX_REL_ERR, errors
