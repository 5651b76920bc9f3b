"""Everything the package ships as data: the embedded pair's folders, held-out digits and code bounds,
the ILSVRC mean image, the ImageNet synset labels and DGN-AM's released code bounds.

Each file is read here and nowhere else, through ``importlib.resources``, so an installed wheel, an
editable checkout and a zipped package all find them. The embedded networks themselves load with
``jaxviz.models.load("caffenet")`` / ``load("generator")``; how they were trained is in
``jaxviz/data/embedded/TRAINING.md``.
"""

from __future__ import annotations

import functools
import importlib.resources
import io
import json
import pathlib

import numpy as np

EMBEDDED = "embedded"
EMBEDDED_FOLDERS = {"caffenet": "classifier", "generator": "generator", "lenet": "judge"}
EMBEDDED_BOUNDS_FILE = "fc6_bounds.npy"
DIGITS_FILE = "heldout_digits.npz"
REFERENCE_DIGITS_FILE = "reference_digits.npz"
MEAN_IMAGE_FILE = "ilsvrc_2012_mean.npy"
SYNSET_FILE = "synset_words.txt"
# DGN-AM's released per-unit code bounds (act_range/3x/*.txt); its conv5.txt (9216 values) bounds the
# pool5 generator's code and ships here as dgn_am_pool5_bounds_3x.txt.
DGN_AM_BOUNDS_FILES = {layer: f"dgn_am_{layer}_bounds_3x.txt" for layer in ("fc6", "fc7", "fc8", "pool5")}
DGN_AM_BOUNDS_SIZES = {"fc6": 4096, "fc7": 4096, "fc8": 1000, "pool5": 256 * 6 * 6}
DGN_AM_FC6_BOUNDS_FILE = DGN_AM_BOUNDS_FILES["fc6"]


def _data(*parts: str):
    return importlib.resources.files("jaxviz").joinpath("data", *parts)


def embedded_dir(architecture: str) -> pathlib.Path:
    """Folder of the embedded default model of ``architecture`` ("caffenet" or "generator")."""
    if architecture not in EMBEDDED_FOLDERS:
        raise ValueError(f"no embedded model of architecture {architecture!r}; known: "
                         f"{', '.join(EMBEDDED_FOLDERS)}")
    return pathlib.Path(str(_data(EMBEDDED, EMBEDDED_FOLDERS[architecture])))


def embedded_card(architecture: str) -> dict:
    """The model card (``metadata.json``) of the embedded model of ``architecture``."""
    return json.loads((embedded_dir(architecture) / "metadata.json").read_text())


def embedded_code_bounds() -> np.ndarray:
    """Per-unit upper bounds of the embedded generator's code (3 std of fc6 over training digits), float32."""
    return np.load(io.BytesIO(_data(EMBEDDED, EMBEDDED_BOUNDS_FILE).read_bytes())).astype(np.float32)


def heldout_digits() -> tuple[np.ndarray, np.ndarray]:
    """The shipped held-out MNIST digits: images (N, 28, 28) uint8 and labels (N,) int (never trained on)."""
    with np.load(io.BytesIO(_data(EMBEDDED, DIGITS_FILE).read_bytes())) as f:
        return f["images"], f["labels"].astype(np.int64)


def reference_digits() -> tuple[np.ndarray, np.ndarray]:
    """The shipped reference digits, t10k 8000..8999: images (1000, 28, 28) uint8 and labels (1000,) int.

    Unseen by both the embedded classifier and the judge (``load("lenet")``): the reference set that
    scoring uses for per-unit percentiles.
    """
    with np.load(io.BytesIO(_data(EMBEDDED, REFERENCE_DIGITS_FILE).read_bytes())) as f:
        return f["images"], f["labels"].astype(np.int64)


@functools.lru_cache(maxsize=1)
def mean_image() -> np.ndarray:
    """The 256x256 ILSVRC 2012 mean image, float32, HWC, BGR (read-only, shared between callers)."""
    image = np.load(io.BytesIO(_data(MEAN_IMAGE_FILE).read_bytes()))
    image.setflags(write=False)
    return image


@functools.lru_cache(maxsize=1)
def synset_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names in CaffeNet's fc8 order (``synset_words.txt`` without the ids)."""
    text = _data(SYNSET_FILE).read_text()
    return tuple(line.split(" ", 1)[1].strip() for line in text.splitlines() if line.strip())


def class_labels(width: int) -> tuple[str, ...] | None:
    """Names of the classes of a ``width``-way output layer: ImageNet synsets for 1000, digits for 10."""
    if width == 1000:
        return synset_labels()
    if width == 10:
        return tuple(str(i) for i in range(10))
    return None


def dgn_am_bounds(code_layer: str) -> np.ndarray:
    """DGN-AM's released per-unit upper bounds ("3 sigma") of CaffeNet ``code_layer`` codes, float32.

    For pool5 the release lists the 256x6x6 units in Caffe's C, H, W order; they come back here in the
    H, W, C order of jaxviz's flat map codes (``jaxviz.models.generator``).
    """
    if code_layer not in DGN_AM_BOUNDS_FILES:
        raise ValueError(f"DGN-AM released no bounds for code layer {code_layer!r}; released: "
                         f"{', '.join(DGN_AM_BOUNDS_FILES)}")
    name, size = DGN_AM_BOUNDS_FILES[code_layer], DGN_AM_BOUNDS_SIZES[code_layer]
    bounds = np.asarray([float(v) for v in _data(name).read_text().split()], np.float32)
    if bounds.shape != (size,):
        raise ValueError(f"{name} holds {bounds.size} values; expected {size}")
    if code_layer == "pool5":
        bounds = bounds.reshape(256, 6, 6).transpose(1, 2, 0).reshape(-1)
    return bounds


def dgn_am_fc6_bounds() -> np.ndarray:
    """DGN-AM's released per-unit upper bounds of CaffeNet fc6 codes ("3 sigma"), 4096 integers as float32."""
    return dgn_am_bounds("fc6")


__all__ = ["embedded_dir", "embedded_card", "embedded_code_bounds", "heldout_digits", "reference_digits", "mean_image", "synset_labels", "class_labels",
           "dgn_am_bounds", "dgn_am_fc6_bounds"]
