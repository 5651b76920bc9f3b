"""Turning network-space images into pictures: display conversion, PNG files, captioned contact sheets."""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxviz.models import preprocessing as caffe_pre

VIEWS = ("photo", "dgn_am")
# Without a preprocessing card, an image is taken to be in real CaffeNet space.
CAFFE_BGR = {"channel_order": "BGR", "pixel_scale": 255.0, "mean": "image"}


def _mean(pre: Mapping[str, Any], height: int, width: int) -> np.ndarray:
    """The mean to add back: per-channel values, or the name of a shipped ImageNet mean ("image"/"channel")."""
    mean = pre.get("mean", 0.0)
    if isinstance(mean, str) or mean is None:
        return np.asarray(caffe_pre.resolve_mean(mean, height, width), np.float32)
    return np.asarray(mean, np.float32)


def to_display(x: Any, preprocessing: Mapping[str, Any] | None = None, view: str = "photo") -> np.ndarray:
    """Network-space image(s) (..., H, W, C) -> uint8 for display: gray (..., H, W) or RGB (..., H, W, 3).

    ``view="photo"`` adds the mean back and clips to the pixel range (the faithful view);
    ``view="dgn_am"`` is DGN-AM's own: clip to [-120, 120] and stretch linearly, without the mean.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    pre = CAFFE_BGR if preprocessing is None else preprocessing
    x = np.asarray(x, np.float32)
    scale = 255.0 / float(pre.get("pixel_scale", 255.0))
    if view == "photo":
        img = np.clip((x + _mean(pre, x.shape[-3], x.shape[-2])) * scale, 0.0, 255.0)
    else:
        clip = caffe_pre.DGN_AM_CLIP
        img = (np.clip(x, -clip, clip) + clip) * (255.0 / (2 * clip))
    img = np.rint(img).astype(np.uint8)
    order = str(pre.get("channel_order", "BGR")).upper()
    if order == "GRAY":
        return img[..., 0]
    return img[..., ::-1] if order == "BGR" else img


def to_pil(image: np.ndarray | Image.Image) -> Image.Image:
    """A uint8 array (H, W) or (H, W, 3) as a PIL image (PIL images pass through)."""
    if isinstance(image, Image.Image):
        return image
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 display image, got {arr.dtype}; convert it with to_display first")
    return Image.fromarray(arr)


def save_png(image: np.ndarray | Image.Image, path: str | os.PathLike) -> pathlib.Path:
    """Write a display image (uint8 array or PIL image) as PNG, creating the folder."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(image).save(path, format="PNG")
    return path


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed-size bitmap font
        return ImageFont.load_default()


def contact_sheet(rows: Sequence[Sequence[np.ndarray | Image.Image]],
                  captions: Sequence[Sequence[str]] | None = None, *,
                  caption_colors: Sequence[Sequence[str]] | None = None, scale: int = 1, pad: int = 2,
                  group: int = 1, group_gap: int = 8, title: str | None = None, font_size: int = 12,
                  background: str = "white") -> Image.Image:
    """A grid of display images, one caption under each, columns optionally grouped (e.g. pairs).

    Cells are sized by the largest image and images are upscaled by ``scale`` with nearest-neighbour
    (pixels stay visible); ``group`` columns sit together with ``group_gap`` extra pixels between groups.
    """
    cells = [[to_pil(im) for im in row] for row in rows]
    n_cols = max((len(r) for r in cells), default=0)
    if n_cols == 0:
        raise ValueError("contact_sheet needs at least one image")
    cw = max(im.width for r in cells for im in r) * scale
    ch = max(im.height for r in cells for im in r) * scale
    font = _font(font_size)
    cap_h = font_size + 4 if captions is not None else 0
    title_h = font_size + 10 if title else 0

    def x_of(col: int) -> int:
        return pad + col * (cw + pad) + (col // group) * group_gap

    width = x_of(n_cols - 1) + cw + pad
    height = title_h + pad + len(cells) * (ch + cap_h + pad)
    sheet = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 4), title, fill="black", font=font)
    for r, row in enumerate(cells):
        y = title_h + pad + r * (ch + cap_h + pad)
        for c, im in enumerate(row):
            im = im.convert("RGB").resize((im.width * scale, im.height * scale), Image.NEAREST)
            sheet.paste(im, (x_of(c), y))
            if captions is not None and c < len(captions[r]) and captions[r][c]:
                color = caption_colors[r][c] if caption_colors is not None else "black"
                draw.text((x_of(c) + 1, y + ch + 1), captions[r][c], fill=color, font=font)
    return sheet
