"""Lenses: what real data says about units (top exemplars, receptive fields, network dissection)."""

from jaxviz.lenses.dissection import Dissection, MaskSet, Net2Vec, dissect, net2vec, synthetic_mask_set
from jaxviz.lenses.exemplars import Exemplars, merge_exemplars, top_exemplars
from jaxviz.lenses.receptive import Geometry, crop_boxes, gradient_footprint, receptive_field

__all__ = ["Exemplars", "top_exemplars", "merge_exemplars", "Geometry", "receptive_field", "crop_boxes",
           "gradient_footprint", "Dissection", "MaskSet", "dissect", "synthetic_mask_set", "Net2Vec", "net2vec"]
