"""The methods by name: the one registry the CLI, sweeps and the demo all read.

``build(name, classifier, generator, layer, steps)`` returns the preset and the objective for one unit
of ``layer`` (its index is the run's target, so one compilation serves a whole layer).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from jaxviz.core import objectives
from jaxviz.core.objectives import Objective
from jaxviz.models import preprocessing as pp
from jaxviz.models.model import Model
from jaxviz.recipes.dgn_am import dgn_am
from jaxviz.recipes.lucid import lucid
from jaxviz.recipes.ppgn import ppgn_sampler
from jaxviz.recipes.preset import Preset
from jaxviz.recipes.yosinski import yosinski2015

Builder = Callable[[Model, "Model | None", str, "int | None"], tuple[Preset, Objective]]


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One named method: what it is, whether it needs a generator, and how to build it."""

    name: str
    summary: str                 # one line for --help and galleries
    needs_generator: bool
    build: Builder


def _steps(steps: int | None) -> dict:
    return {} if steps is None else {"steps": steps}


def _dgn_am(classifier: Model, generator: Model | None, layer: str, steps: int | None):
    return dgn_am(generator, **_steps(steps)), objectives.unit(layer)


def _pixel(classifier: Model, generator: Model | None, layer: str, steps: int | None):
    # Setting 4 of Yosinski et al. 2015 (blur, contribution clipping, step size set by progress): the
    # fixed step size of settings 2-3 is tuned to CaffeNet's gradients and barely moves a small net.
    h, w = classifier.input_shape[:2]
    mean = pp.mean_array(classifier.preprocessing, h, w) if classifier.preprocessing.get("mean") is not None else None
    return yosinski2015(4, classifier.input_shape, mean=mean, **_steps(steps)), objectives.unit(layer)


def _sampler(classifier: Model, generator: Model | None, layer: str, steps: int | None):
    preset = ppgn_sampler(generator, class_layer=layer, **_steps(steps))
    return preset, preset.objective


def _lucid(classifier: Model, generator: Model | None, layer: str, steps: int | None):
    return lucid(classifier.input_shape, classifier.preprocessing, **_steps(steps)), objectives.unit(layer)


METHODS: dict[str, MethodSpec] = {m.name: m for m in (
    MethodSpec("dgn_am", "generator code (Nguyen et al. 2016)", True, _dgn_am),
    MethodSpec("pixel", "pixels under Yosinski et al. 2015 priors (setting 4)", False, _pixel),
    MethodSpec("sampler", "PPGN-style sampler, class layers (survey eq. 13)", True, _sampler),
    MethodSpec("lucid", "Fourier image, Adam, robustness transforms (Lucid's default)", False, _lucid),
)}


def method_spec(name: str) -> MethodSpec:
    """The registered method ``name`` (a clear error naming the known ones otherwise)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)} (inverse sets: "
                         f"jaxviz.inverse_set, or 'jaxviz sweep --method inverse_set')")
    return METHODS[name]


def build(name: str, classifier: Model, generator: Model | None, layer: str,
          steps: int | None = None) -> tuple[Preset, Objective]:
    """(preset, objective) of method ``name`` for the units of ``layer``; ``steps`` None: the method's own."""
    spec = method_spec(name)
    if spec.needs_generator and generator is None:
        raise ValueError(f"method {name!r} optimizes a generator code: pass a generator")
    return spec.build(classifier, generator, layer, steps)


__all__ = ["MethodSpec", "METHODS", "method_spec", "build"]
