"""Scoring: every visualization carries the evidence for how far to trust it.

A ``Report`` per run holds the activation and rank, the percentile among real inputs (``reference``),
the label an independent classifier gives the image, the path check after Geirhos et al. 2023, the
spread of a unit's seeds, and flags with their reasons and fixes (``scores``). ``jaxviz.visualize``
(``api``) returns results with their reports, which save themselves as PNGs.
"""

from jaxviz.scoring.api import Visualization, score_result, visualize, visualize_batch
from jaxviz.scoring.defaults import default_scorer, embedded_judge, make_scorer
from jaxviz.scoring.reference import ReferenceSet, embedded_reference, folder_reference, reference_for
from jaxviz.scoring.scorer import Report, Scorer
from jaxviz.scoring.scores import Flag, flags_for, mean_pairwise_distance, path_similarity, percentile_of

__all__ = ["Visualization", "score_result", "visualize", "visualize_batch", "default_scorer", "embedded_judge",
           "make_scorer", "ReferenceSet", "embedded_reference", "folder_reference", "reference_for", "Report",
           "Scorer", "Flag", "flags_for", "mean_pairwise_distance", "path_similarity", "percentile_of"]
