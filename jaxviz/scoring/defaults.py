"""The scorer a model gets when none is given: the shipped reference digits and judge for the embedded
pair; for any other model, no reference set and no judge until the user names them."""

from __future__ import annotations

from typing import Any

from jaxviz.models import checkpoint
from jaxviz.models.model import Model
from jaxviz.models.shipped import embedded_dir
from jaxviz.models.zoo import load
from jaxviz.scoring.reference import embedded_reference, reference_for
from jaxviz.scoring.scorer import Scorer

JUDGE_ARCHITECTURE = "lenet"
_SCORERS: dict[int, tuple[Model, Scorer]] = {}


def embedded_judge() -> Model | None:
    """The independent classifier shipped for the embedded pair (a LeNet on another split), if installed.

    An install without the judge's files scores without a second opinion; a judge that is there but
    damaged raises ``CheckpointError`` naming the file, rather than silently scoring without it.
    """
    if not (embedded_dir(JUDGE_ARCHITECTURE) / checkpoint.METADATA_FILE).is_file():
        return None
    return load(JUDGE_ARCHITECTURE)


def make_scorer(model: Model, reference_folder: Any = None, judge: Model | None = None) -> Scorer:
    """A scorer for ``model``: reference images from ``reference_folder`` (else the shipped digits when
    they fit), ``judge`` as the second opinion (else the shipped judge for the embedded pair's space)."""
    reference = reference_for(model, reference_folder)
    if judge is None and embedded_reference(model) is not None:
        judge = embedded_judge()
    return Scorer(model, reference, judge)


def default_scorer(model: Model) -> Scorer:
    """``make_scorer(model)``, built once per model object and reused."""
    entry = _SCORERS.get(id(model))
    if entry is None or entry[0] is not model:
        entry = (model, make_scorer(model))
        _SCORERS[id(model)] = entry
    return entry[1]


__all__ = ["JUDGE_ARCHITECTURE", "embedded_judge", "make_scorer", "default_scorer"]
