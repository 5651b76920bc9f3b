"""``Preset``: a method with its settings, ready to run; every recipe returns one."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from jaxviz.core.loop import Method
from jaxviz.core.objectives import Objective
from jaxviz.core.params import Parameterization
from jaxviz.core.run import Network
from jaxviz.scoring.api import Visualization, visualize, visualize_batch


@dataclasses.dataclass(frozen=True)
class Preset:
    """A method with its settings: parameterization, update rule and priors, generator weights, defaults."""

    param: Parameterization
    method: Method
    aux_params: Any = None               # the generator's params when the image is G(code)
    objective: Objective | None = None   # default objective (the sampler's, the inversion's)
    target: Any = None                   # default target (the inversion's reference features)
    name: str = "preset"

    def _objective(self, objective: Objective | None) -> Objective:
        chosen = objective if objective is not None else self.objective
        if chosen is None:
            raise ValueError(f"preset {self.name!r} has no default objective: pass one, e.g. "
                             f"objectives.unit('fc8', 3)")
        return chosen

    def visualize(self, net: Network, objective: Objective | None = None, key: jax.Array | None = None,
                  target: Any = None, z0: jax.Array | None = None, **options: Any) -> Visualization:
        """One run of this preset on ``net`` (``jaxviz.visualize`` with the preset's setup; ``options``:
        its ``scorer`` and ``on_step``)."""
        return visualize(net, self._objective(objective), self.param, key=key, method=self.method,
                         aux_params=self.aux_params, target=self.target if target is None else target, z0=z0,
                         **options)

    def visualize_batch(self, net: Network, objective: Objective | None = None, keys: jax.Array | None = None,
                        targets: Any = None, z0: jax.Array | None = None, **options: Any) -> Visualization:
        """Many runs of this preset in one compiled program (``jaxviz.visualize_batch``; ``options`` as above)."""
        return visualize_batch(net, self._objective(objective), self.param, keys=keys,
                               targets=self.target if targets is None else targets, method=self.method,
                               aux_params=self.aux_params, z0=z0, **options)


__all__ = ["Preset"]
