"""Lenses: what real data and given images say about units.

Top exemplars, receptive fields and network dissection (real data through a network); the DeconvNet,
saliency and guided backprop (one unit projected down to the pixels); DeepDream.
"""

from jaxviz.lenses.backprop import KEEPS, RULES, enlarge, layer_shape, project, projection_display, side_by_side
from jaxviz.lenses.dissection import Dissection, MaskSet, Net2Vec, dissect, net2vec, synthetic_mask_set
from jaxviz.lenses.dream import Dream, deep_dream, dream_objective, layer_norm, octave_sizes, roll_jitter
from jaxviz.lenses.exemplars import Exemplars, merge_exemplars, top_exemplars
from jaxviz.lenses.inputs import fit_to_model, read_image, shipped_digit, strongest_digit
from jaxviz.lenses.receptive import Geometry, crop_boxes, gradient_footprint, receptive_field

__all__ = ["Exemplars", "top_exemplars", "merge_exemplars", "Geometry", "receptive_field", "crop_boxes",
           "gradient_footprint", "Dissection", "MaskSet", "dissect", "synthetic_mask_set", "Net2Vec", "net2vec",
           "KEEPS", "RULES", "layer_shape", "project", "projection_display", "Dream", "deep_dream",
           "dream_objective", "layer_norm", "octave_sizes", "roll_jitter", "fit_to_model", "read_image",
           "side_by_side", "shipped_digit", "strongest_digit", "enlarge"]
