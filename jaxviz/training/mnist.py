"""Reading MNIST's IDX gzip files (the original LeCun format) into numpy arrays."""

from __future__ import annotations

import gzip
import os
import pathlib
from typing import NamedTuple

import numpy as np

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049


class Digits(NamedTuple):
    """MNIST images (N, 28, 28) uint8 and labels (N,) uint8."""

    images: np.ndarray
    labels: np.ndarray


def _read_idx(path: pathlib.Path, magic: int, ndim: int) -> np.ndarray:
    """The uint8 payload of one IDX file (gzip or plain), checked against its magic number and header."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    header_bytes = 4 * (1 + ndim)
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic or len(raw) < header_bytes:
        raise ValueError(f"{path}: magic number {found}, expected {magic} (not an IDX file of this kind)")
    header = np.frombuffer(raw[:header_bytes], dtype=">u4")
    shape = tuple(int(d) for d in header[1:])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_bytes)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def _find(folder: pathlib.Path, stem: str) -> pathlib.Path:
    """``stem.gz`` or ``stem`` inside ``folder``."""
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: neither {stem}.gz nor {stem} found")


def load_idx(folder: str | os.PathLike, prefix: str = "t10k") -> Digits:
    """The images and labels of ``{prefix}-images-idx3-ubyte[.gz]`` / ``{prefix}-labels-idx1-ubyte[.gz]``."""
    folder = pathlib.Path(folder)
    images = _read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"), IMAGE_MAGIC, 3)
    labels = _read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"), LABEL_MAGIC, 1)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels")
    return Digits(images, labels)


def split(digits: Digits, n_train: int) -> tuple[Digits, Digits]:
    """The first ``n_train`` examples and the rest, in file order (a fixed, documented held-out part)."""
    if not 0 < n_train < len(digits.labels):
        raise ValueError(f"n_train={n_train} must lie strictly between 0 and {len(digits.labels)}")
    return (Digits(digits.images[:n_train], digits.labels[:n_train]),
            Digits(digits.images[n_train:], digits.labels[n_train:]))
