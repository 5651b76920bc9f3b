"""The library entry points, scored: ``jaxviz.visualize`` and ``jaxviz.visualize_batch``.

They run the engine (``jaxviz.core.run.optimize``) and attach a ``Report`` per run to the result, so a
picture never travels without its activation, rank, percentile among real inputs, the second opinion
of an independent classifier, the path check and its flags. The result saves itself as a PNG in its
model's display space (``Visualization.save_png``).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Callable

import jax
import numpy as np
from PIL import Image

from jaxviz.core.loop import Method, Result
from jaxviz.core.objectives import Objective
from jaxviz.core.params import Parameterization
from jaxviz.core.run import Network, optimize, optimize_batch
from jaxviz.io import images as image_io
from jaxviz.models import preprocessing as pp
from jaxviz.models.model import Model
from jaxviz.scoring.defaults import default_scorer
from jaxviz.scoring.scorer import Report, Scorer

WHICH = ("best", "final")


class Visualization(Result):
    """A ``Result`` with its ``report`` filled (one ``Report``, or a tuple of them for a batch)."""

    __slots__ = ()

    def picture(self, which: str = "best", index: int = 0, run: int = 0) -> np.ndarray:
        """The uint8 display image of run ``run`` (batches), image ``index``: the best one seen or the final."""
        if which not in WHICH:
            raise ValueError(f"which must be one of {WHICH}, got {which!r}")
        x = np.asarray(self.best_image if which == "best" else self.image)
        if isinstance(self.report, tuple):
            x, report = x[run], self.report[run]
        else:
            report = self.report
        card = report.preprocessing if report is not None else None
        return pp.to_display(x[index], card or None)

    def runs(self) -> int:
        """How many runs this result holds (1 for a single ``visualize``)."""
        return len(self.report) if isinstance(self.report, tuple) else 1

    def show(self, which: str = "best", scale: int | None = None, columns: int = 10) -> Image.Image:
        """Every run's picture in a grid, captioned with its unit, activation and rank (a notebook shows it).

        A caption is red when the run carries a flag. ``scale`` defaults to enlarging small images to
        about 112 px.
        """
        reports = self.report if isinstance(self.report, tuple) else (self.report,)
        pictures = [self.picture(which, run=r) if isinstance(self.report, tuple) else self.picture(which)
                    for r in range(len(reports))]
        if scale is None:
            scale = max(1, -(-112 // max(pictures[0].shape[:2])))
        captions = [_caption(r) for r in reports]
        colors = ["#b00" if r is not None and r.flags else "#222" for r in reports]
        rows = [list(range(i, min(i + columns, len(pictures)))) for i in range(0, len(pictures), columns)]
        return image_io.contact_sheet([[pictures[i] for i in row] for row in rows],
                                      [[captions[i] for i in row] for row in rows],
                                      caption_colors=[[colors[i] for i in row] for row in rows], scale=scale)

    def _repr_png_(self) -> bytes:
        """Notebooks display a result as its pictures with their captions."""
        return image_io.png_bytes(self.show())

    def save_png(self, path: str | os.PathLike, which: str = "best", scale: int | None = None, index: int = 0,
                 run: int = 0) -> pathlib.Path:
        """Write the picture as a PNG (atomically), enlarged ``scale`` times (default: to at least 224 px)."""
        image = self.picture(which, index, run)
        if scale is None:
            scale = max(1, -(-224 // max(image.shape[:2])))
        if scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        pil = image_io.to_pil(image)
        return image_io.save_png(pil.resize((pil.width * scale, pil.height * scale), resample=0), path)


def _caption(report: Report | None) -> str:
    if report is None:
        return "unscored"
    flags = f" ({len(report.flags)} flag{'s' if len(report.flags) > 1 else ''})" if report.flags else ""
    return f"{report.layer}:{report.unit} act {report.activation:.3g} rank {report.rank}{flags}"


def _unit_of(objective: Objective, target: Any) -> int | None:
    index = objective.unit_index if objective.unit_index is not None else target
    try:
        return int(np.asarray(index).reshape(()))
    except (TypeError, ValueError):
        return None


def score_result(net: Network, objective: Objective, result: Result, targets: Any, scorer: Scorer | None,
                 batched: bool) -> Visualization:
    """``result`` with a report per run, when ``net`` is a Model and the objective names one unit."""
    if objective.unit_layer is None or not isinstance(net, Model):
        return Visualization(*result)
    scorer = default_scorer(net) if scorer is None else scorer
    n = np.asarray(result.best_image).shape[0] if batched else 1
    images = np.asarray(result.best_image).reshape(n, -1, *np.asarray(result.best_image).shape[-3:])[:, 0]
    index = objective.unit_index
    units = ([index] * n if index is not None else np.asarray(targets).reshape(n).tolist())
    trace = np.asarray(result.activation).reshape(n, -1)
    trace_max = np.nanmax(np.where(np.isfinite(trace), trace, -np.inf), axis=1)
    failed = np.asarray(result.failed_step).reshape(n)
    reports = scorer.score(images, objective.unit_layer, units, objective.unit_position, trace_max, failed)
    return Visualization(*result._replace(report=tuple(reports) if batched else reports[0]))


def visualize(net: Network, objective: Objective, param: Parameterization | None = None, steps: int | None = None,
              key: jax.Array | None = None, *, method: Method | None = None, aux_params: Any = None,
              target: Any = None, z0: jax.Array | None = None, scorer: Scorer | None = None,
              on_step: Callable[[int], None] | None = None) -> Visualization:
    """One optimization of ``objective`` on ``net``, scored; reproducible from ``key``.

    Without ``param`` the pixels themselves are optimized; without ``method``, plain gradient ascent
    (lr 1, 200 steps). ``aux_params`` are the parameterization's weights (a generator's), ``target`` the
    unit index or reference features an objective built without one reads, ``z0`` a starting variable,
    ``scorer`` the reference set and judge to score against (default: ``default_scorer(net)``), ``on_step(n)``
    a progress callback.
    """
    result = optimize(net, objective, param, steps, key, method=method, aux_params=aux_params, target=target, z0=z0,
                      on_step=on_step)
    return score_result(net, objective, result, target, scorer, batched=False)


def visualize_batch(net: Network, objective: Objective, param: Parameterization | None = None,
                    steps: int | None = None, keys: jax.Array | None = None, targets: Any = None, *,
                    method: Method | None = None, aux_params: Any = None, z0: jax.Array | None = None,
                    scorer: Scorer | None = None, on_step: Callable[[int], None] | None = None) -> Visualization:
    """Many runs in one compiled program (``keys``, ``targets``, ``z0`` with a leading run axis), scored."""
    result = optimize_batch(net, objective, param, steps, keys, targets, method=method, aux_params=aux_params,
                            z0=z0, on_step=on_step)
    if objective.unit_layer is None or (targets is None and objective.unit_index is None):
        return Visualization(*result)  # nothing to score: no single unit (inversions, batch objectives)
    n = np.asarray(result.best_image).shape[0]
    return score_result(net, objective, result, np.broadcast_to(np.asarray(targets if targets is not None
                                                                          else objective.unit_index), (n,)),
                        scorer, batched=True)


__all__ = ["Visualization", "visualize", "visualize_batch", "score_result", "WHICH"]
