"""``build_network(spec)``: a runnable ``PrototxtNet`` from a Caffe deploy prototxt (a ``NetSpec``).

The layers a deploy network runs without (data sources, losses, accuracy, TRAIN-phase layers) are left
out, the inputs and their shapes found, and every kept layer built and its top shapes inferred
(``jax.eval_shape``) once, here, so that a layer jaxviz cannot run, a missing input shape or a wiring
mistake is reported at build time, naming the file and layer, not at the first call.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

from weights_convert.errors import ConversionError, ModelMismatchError, UnsupportedLayerError
from weights_convert.netspec import LayerSpec, NetSpec
from weights_convert.network.axes import jaxviz_shape
from weights_convert.network.builders import BUILD_BATCH, LAYER_BUILDERS, BuiltLayer
from weights_convert.network.graph import PrototxtNet, Shape, Step

# Layers a deploy network runs without: data sources, scoring, and Input (its tops are the net's inputs).
SKIPPED_TYPES = frozenset({
    "Data", "HDF5Data", "HDF5Output", "ImageData", "MemoryData", "WindowData", "DummyData", "Accuracy",
    "Silence", "Input",
})


def is_training_only(layer: LayerSpec) -> bool:
    """Whether a deploy network leaves this layer out (data sources, losses, accuracy, TRAIN-phase layers)."""
    return (layer.phase == "TRAIN" or layer.type in SKIPPED_TYPES or layer.type.endswith("Loss"))


def _needed_layers(layers_: Sequence[LayerSpec], outputs: Sequence[str]) -> list[LayerSpec]:
    """The layers that ``outputs`` depend on (walking back; in-place writers keep their blob needed)."""
    needed, kept = set(outputs), []
    for layer in reversed(layers_):
        if needed & set(layer.tops):
            kept.append(layer)
            needed -= set(layer.tops) - set(layer.bottoms)
            needed |= set(layer.bottoms)
    return kept[::-1]


def _declared_inputs(spec: NetSpec, deploy: Sequence[LayerSpec],
                     input_shapes: Mapping[str, Sequence[int]] | None) -> dict[str, Shape]:
    """Caffe-order input shapes (batch 1): declared ones, overridden by ``input_shapes``; data-layer tops
    that a kept layer reads count as inputs too (a train/test prototxt), and need a shape."""
    produced = {t for l in deploy for t in l.tops}
    read = [b for l in deploy for b in l.bottoms if b not in produced]
    names = list(spec.inputs) + [b for b in dict.fromkeys(read) if b not in spec.inputs]
    overrides = dict(input_shapes or {})
    unknown = [n for n in overrides if n not in names]
    if unknown:
        raise ValueError(f"input_shapes names {unknown}, which are not inputs of the net ({names})")
    inputs: dict[str, Shape] = {}
    for name in names:
        shape = overrides.get(name, spec.inputs.get(name))
        if shape is None:
            if name in read:
                raise ConversionError(f"the shape of input {name!r} is not declared; pass input_shapes",
                                      file=spec.source)
            continue
        shape = tuple(int(s) for s in shape)
        inputs[name] = (BUILD_BATCH,) + shape[1:]
    return inputs


def build_network(spec: NetSpec, *, input_shapes: Mapping[str, Sequence[int]] | None = None,
                  outputs: Sequence[str] | None = None) -> PrototxtNet:
    """A runnable network from a NetSpec; every layer is checked and every shape inferred here.

    ``input_shapes`` (Caffe N, C, H, W order) replaces declared input shapes; ``outputs`` keeps only the
    layers those blobs depend on (e.g. a backbone before a layer jaxviz does not support).
    """
    deploy = [l for l in spec.layers if not is_training_only(l)]
    if outputs is not None:
        deploy = _needed_layers(deploy, outputs)
    for layer in deploy:  # all unsupported types first, before any shape work
        if layer.type not in LAYER_BUILDERS:
            raise UnsupportedLayerError(
                f"layer type {layer.type!r} is not supported; supported types: {', '.join(LAYER_BUILDERS)}",
                file=spec.source, layer=layer.name)
    caffe_inputs = _declared_inputs(spec, deploy, input_shapes)
    shapes: dict[str, Shape] = {name: jaxviz_shape(s) for name, s in caffe_inputs.items()}
    steps = []
    for layer in deploy:
        try:
            missing = [b for b in layer.bottoms if b not in shapes]
            if missing:
                raise ModelMismatchError(f"bottom blob(s) {missing} are produced by no earlier layer "
                                         f"and are not inputs")
            bottom_shapes = tuple(shapes[b] for b in layer.bottoms)
            built = LAYER_BUILDERS[layer.type](layer, bottom_shapes)
            top_shapes = _infer_tops(built, bottom_shapes)
            if len(top_shapes) != len(layer.tops):
                raise ModelMismatchError(f"{layer.type} makes {len(top_shapes)} outputs but has "
                                         f"{len(layer.tops)} tops")
        except ConversionError as err:
            raise err.located(file=spec.source, layer=layer.name) from None
        shapes.update(zip(layer.tops, top_shapes))
        steps.append(Step(layer.name, layer.type, tuple(layer.bottoms), tuple(layer.tops), built.fn,
                          dict(built.param_shapes), bottom_shapes, top_shapes))
    if not steps:
        raise ConversionError("the network has no layers to run", file=spec.source)
    return PrototxtNet.from_steps(name=spec.name or (os.path.basename(spec.source) if spec.source else "net"),
                                  source=spec.source,
                                  inputs={n: jaxviz_shape(s)[1:] for n, s in caffe_inputs.items()},
                                  steps=steps)


def _infer_tops(built: BuiltLayer, bottom_shapes: Sequence[Shape]) -> tuple[Shape, ...]:
    """Top shapes by abstract evaluation; a shape error becomes a ModelMismatchError."""
    params = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in built.param_shapes.items()}
    xs = tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in bottom_shapes)
    try:
        outs = jax.eval_shape(built.fn, params, xs)
    except (TypeError, ValueError) as err:
        raise ModelMismatchError(f"the layer cannot run on bottoms of shape {list(bottom_shapes)}: "
                                 f"{str(err).splitlines()[0]}") from None
    tops = tuple(tuple(int(d) for d in o.shape) for o in outs)
    for shape in tops:
        if min(shape, default=1) < 1:
            raise ModelMismatchError(f"the output would have shape {shape}: the input is too small")
    return tops
