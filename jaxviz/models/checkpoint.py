"""The on-disk form of converted weights: an orbax checkpoint of the Flax params plus a JSON card.

A model folder holds ``params/`` (orbax) and ``metadata.json``::

    {"architecture": "caffenet", "format_version": 1, "config": {...}, "source": {"file": ..., "sha256": ...},
     "layers": {"conv1": {"kernel": [11, 11, 3, 96], "bias": [96]}, ...}, ...}

``weights_convert`` writes it from a ``.caffemodel``; the embedded demo models ship in the same form.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping

import jax
import numpy as np

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
PARAMS_DIR = "params"


class CheckpointError(Exception):
    """A model folder is missing, incomplete, or does not match what was asked for."""


def param_shapes(params: Mapping[str, Any]) -> dict[str, Any]:
    """The nested dict of parameter shapes (lists), as recorded in the metadata card."""
    return jax.tree_util.tree_map(lambda a: list(np.shape(a)), dict(params))


def save(out_dir: str | os.PathLike, params: Mapping[str, Any], metadata: Mapping[str, Any]) -> pathlib.Path:
    """Write ``params`` (a nested dict of arrays) and its metadata card into ``out_dir``."""
    import orbax.checkpoint as ocp  # imported here: orbax is slow to import and only needed on disk I/O

    out = pathlib.Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), dict(params))
    target = out / PARAMS_DIR
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(target, params, force=True)
    checkpointer.wait_until_finished()
    # orbax's commit marker records the absolute save path; restore does not need it, and without it the
    # folder can be moved or shipped without naming the machine it was made on.
    (target / "commit_success.txt").unlink(missing_ok=True)
    card = {"format_version": FORMAT_VERSION, **metadata, "layers": param_shapes(params)}
    tmp = out / (METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True))
    os.replace(tmp, out / METADATA_FILE)  # the card appears last, and atomically: it marks a complete folder
    return out


def read_metadata(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The metadata card of a model folder."""
    path = pathlib.Path(model_dir) / METADATA_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found: {model_dir} is not a converted jaxviz model folder "
                              f"(convert one with `python -m weights_convert`)")
    card = json.loads(path.read_text())
    if card.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {card.get('format_version')} is not "
                              f"{FORMAT_VERSION}; reconvert the model")
    return card


def restore(model_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """The params (numpy arrays) and metadata card stored in ``model_dir``; shapes checked against the card."""
    import orbax.checkpoint as ocp

    card = read_metadata(model_dir)
    target = pathlib.Path(model_dir).absolute() / PARAMS_DIR
    if not target.is_dir():
        raise CheckpointError(f"{target} not found: the model folder is incomplete")
    params = ocp.StandardCheckpointer().restore(target)
    if param_shapes(params) != card["layers"]:
        raise CheckpointError(f"{model_dir}: stored parameter shapes differ from its {METADATA_FILE}")
    return params, card
