"""Lenses: looking at what a network does with a given image (DeconvNet, saliency, guided backprop, DeepDream)."""

from jaxviz.lenses.backprop import KEEPS, RULES, layer_shape, project, projection_display

__all__ = ["KEEPS", "RULES", "layer_shape", "project", "projection_display"]
