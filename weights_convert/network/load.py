"""Any supported Caffe network from its files: ``from_caffe`` gives ``(net, params)``, ``load_caffe`` a ``Model``."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from jaxviz.models.model import Model
from weights_convert.caffemodel import read_caffemodel
from weights_convert.finite import check_finite
from weights_convert.netspec import attach_weights
from weights_convert.network.blobs import params_from_blobs
from weights_convert.network.build import build_network
from weights_convert.network.graph import Array, Params, PrototxtNet
from weights_convert.prototxt import read_prototxt


def from_caffe(prototxt_path: str | os.PathLike, caffemodel_path: str | os.PathLike | None = None, *,
               input_shapes: Mapping[str, Sequence[int]] | None = None,
               rng: Array | int | None = None, allow_nonfinite: bool = False) -> tuple[PrototxtNet, Params]:
    """``(net, params)`` from a deploy prototxt and its weights (random Caffe-style params without them).

    NaN/Inf weights are a ``NonFiniteWeightsError`` naming the layer and blob, unless ``allow_nonfinite``.
    """
    arch = read_prototxt(prototxt_path)
    if caffemodel_path is None:
        net = build_network(arch, input_shapes=input_shapes)
        return net, net.init(0 if rng is None else rng)
    spec = attach_weights(arch, read_caffemodel(caffemodel_path))
    check_finite(spec.blobs_by_layer(), [layer.name for layer in spec.layers], str(caffemodel_path),
                 allow_nonfinite, how_to_allow="pass allow_nonfinite=True to load it anyway")
    net = build_network(spec, input_shapes=input_shapes)
    return net, params_from_blobs(spec, net)


def load_caffe(prototxt: str | os.PathLike, caffemodel: str | os.PathLike | None = None,
               **kwargs: Any) -> Model:
    """Any supported Caffe network from its deploy prototxt (and weights), as a ``Model``.

    ``kwargs`` go to ``from_caffe`` (``input_shapes``, ``rng``, ``allow_nonfinite``).
    """
    net, params = from_caffe(prototxt, caffemodel, **kwargs)
    metadata = {"architecture": "prototxt", "prototxt": str(prototxt),
                "caffemodel": None if caffemodel is None else str(caffemodel)}
    return Model("prototxt", net, params, metadata)
