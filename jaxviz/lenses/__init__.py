"""Lenses: what a network does with a given image (DeconvNet, saliency, guided backprop, DeepDream)."""

from jaxviz.lenses.backprop import KEEPS, RULES, enlarge, layer_shape, project, projection_display, side_by_side
from jaxviz.lenses.inputs import fit_to_model, read_image, shipped_digit, strongest_digit
from jaxviz.lenses.dream import Dream, deep_dream, dream_objective, layer_norm, octave_sizes, roll_jitter

__all__ = ["KEEPS", "RULES", "layer_shape", "project", "projection_display", "Dream", "deep_dream",
           "dream_objective", "layer_norm", "octave_sizes", "roll_jitter", "fit_to_model", "read_image", "side_by_side",
           "shipped_digit", "strongest_digit", "enlarge"]
