"""Pictures: display images as PIL images and PNG files, and captioned contact sheets.

Network-space images become display images with ``jaxviz.models.preprocessing.to_display`` (by the
model's card); everything here takes uint8 display images.
"""

from __future__ import annotations

import io
import os
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxviz.io.atomic import atomic_write_bytes


def to_pil(image: np.ndarray | Image.Image) -> Image.Image:
    """A uint8 array (H, W) or (H, W, 3) as a PIL image (PIL images pass through)."""
    if isinstance(image, Image.Image):
        return image
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 display image, got {arr.dtype}; convert it with to_display first")
    return Image.fromarray(arr)


def save_png(image: np.ndarray | Image.Image, path: str | os.PathLike) -> pathlib.Path:
    """Write a display image (uint8 array or PIL image) as PNG, atomically, creating the folder."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, png_bytes(image))
    return path


def png_bytes(image: np.ndarray | Image.Image) -> bytes:
    """A display image encoded as PNG."""
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return buf.getvalue()


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


__all__ = ["to_pil", "save_png", "png_bytes", "contact_sheet"]
