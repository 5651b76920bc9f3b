"""Display conversion, PNG writing and contact sheets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxviz.io import images as render
from jaxviz.models import preprocessing as caffe_pre

GRAY = {"channel_order": "gray", "pixel_scale": 255.0, "mean": [33.0]}


def test_gray_photo_view_adds_mean_back_and_clips():
    x = np.array([[-33.0, 0.0], [222.0, 500.0]], np.float32)[None, :, :, None]
    np.testing.assert_array_equal(caffe_pre.to_display(x, GRAY), [[[0, 33], [255, 255]]])


def test_bgr_views_match_preprocessing():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    x = caffe_pre.rgb_to_caffe(rgb, "channel")
    card = {"channel_order": "BGR", "mean": caffe_pre.MEAN_BGR.tolist()}
    np.testing.assert_array_equal(caffe_pre.to_display(x, card), rgb)
    dgn = caffe_pre.to_display(x, card, view="dgn_am")
    np.testing.assert_array_equal(dgn, caffe_pre.to_uint8(caffe_pre.display_dgn_am(x), white=1.0))
    # without a card: real CaffeNet space with the mean image
    x_img = caffe_pre.rgb_to_caffe(rgb, "image")
    np.testing.assert_array_equal(caffe_pre.to_display(x_img), rgb)


def test_unknown_view_rejected():
    with pytest.raises(ValueError, match="view"):
        caffe_pre.to_display(np.zeros((1, 2, 2, 1)), GRAY, view="nope")


def test_contact_sheet_layout_and_png(tmp_path):
    img = np.full((10, 12), 200, np.uint8)
    rows = [[img, img, img, img], [img, img]]
    sheet = render.contact_sheet(rows, [["a", "b", "c", "d"], ["e", "f"]], scale=2, pad=2, group=2,
                                 group_gap=6, title="t")
    assert sheet.mode == "RGB"
    assert sheet.width == 2 + 4 * (24 + 2) + 6  # pads, 4 cells of 24, one gap between the two pairs
    path = render.save_png(sheet, tmp_path / "sub" / "sheet.png")
    assert Image.open(path).size == sheet.size


def test_save_png_rejects_float_arrays(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        render.save_png(np.zeros((4, 4), np.float32), tmp_path / "x.png")
