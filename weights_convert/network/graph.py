"""The runtime of a prototxt-built network: ``PrototxtNet`` (its steps, its taps, ``init`` and ``apply``).

A ``PrototxtNet`` is a straight list of ``Step``s, each a pure function of ``(layer_params, bottoms)``
with the blob shapes seen at build time; ``weights_convert.network.build.build_network`` makes one.

Taps, as for ``CaffeNet``: ``"<blob>"`` is the blob's value once the forward pass is done (after any
in-place layers), ``"<blob>:pre"`` the value first written, before in-place layers (offered only for
blobs that in-place layers modify). Only the layers up to the deepest requested tap run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.models._taps import resolve_taps

Array = jax.Array
LayerParams = Mapping[str, Array]
Params = dict[str, dict[str, Any]]
LayerFn = Callable[[LayerParams, tuple[Array, ...]], tuple[Array, ...]]
Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Step:
    """One layer of a built network, with the shapes (batch 1, jaxviz layout) seen at build time."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    fn: LayerFn
    param_shapes: Mapping[str, Shape]
    bottom_shapes: tuple[Shape, ...]
    top_shapes: tuple[Shape, ...]


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity, so it can be a static jit argument
class PrototxtNet:
    """A Caffe network built from a NetSpec: ``apply(params, x, taps)`` is pure, so it jits and vmaps.

    ``x`` is one NHWC float array (a (N, C) array for a vector input) or a dict input name -> array.
    """

    name: str
    source: str | None
    inputs: Mapping[str, Shape]  # per-example shapes, jaxviz layout (H, W, C) or (C,)
    steps: tuple[Step, ...]
    tap_names: tuple[str, ...]  # forward order
    outputs: tuple[str, ...]  # Caffe's net outputs: blobs no layer consumes; the default taps
    _tap_ready: Mapping[str, int]  # tap -> index of the step after which its value is final

    @classmethod
    def from_steps(cls, name: str, source: str | None, inputs: Mapping[str, Shape],
                   steps: Sequence[Step]) -> PrototxtNet:
        """The network running ``steps`` in order; its taps and outputs follow from the steps' wiring."""
        tap_names, ready = tap_order(steps)
        return cls(name=name, source=source, inputs=dict(inputs), steps=tuple(steps), tap_names=tap_names,
                   outputs=net_outputs(steps), _tap_ready=ready)

    @property
    def input_shape(self) -> Shape:
        """The per-example input shape (H, W, C) of a single-input network."""
        if len(self.inputs) != 1:
            raise ValueError(f"{self.name}: has inputs {list(self.inputs)}; use .inputs")
        return next(iter(self.inputs.values()))

    @property
    def input_names(self) -> tuple[str, ...]:
        """The input blob names in declaration order."""
        return tuple(self.inputs)

    @property
    def param_shapes(self) -> dict[str, dict[str, Shape]]:
        """Shapes of every parameter, by layer then name (``kernel``, ``bias``, ``slope``)."""
        return {s.name: dict(s.param_shapes) for s in self.steps if s.param_shapes}

    def tap_shapes(self) -> dict[str, Shape]:
        """Per-example shape of every tap (jaxviz layout), at the declared input size."""
        shapes: dict[str, Shape] = {}
        for step in self.steps:
            for top, shape in zip(step.tops, step.top_shapes):
                if f"{top}:pre" in self._tap_ready and f"{top}:pre" not in shapes:
                    shapes[f"{top}:pre"] = shape[1:]
                shapes[top] = shape[1:]
        return {name: shapes[name] for name in self.tap_names}

    def layer_taps(self) -> dict[str, str]:
        """Layer name -> the tap holding its (first) top's output; layers between two in-place writers of
        one blob have no tap and are left out."""
        first_writer, last_writer = _writers(self.steps)
        out = {}
        for i, step in enumerate(self.steps):
            if not step.tops:
                continue
            top = step.tops[0]
            if last_writer[top] == i:
                out[step.name] = top
            elif first_writer[top] == i:
                out[step.name] = f"{top}:pre"
        return out

    def init(self, rng: Array | int = 0) -> Params:
        """Random parameters in Caffe's default style (weights N(0, 0.01), zero biases, PReLU slopes 0.25).

        ``rng`` is a JAX key or an int seed; numbers come from numpy (threefry compiles for seconds per shape).
        """
        seed = rng if isinstance(rng, int) else np.asarray(jax.random.key_data(rng)).ravel().tolist()
        gen = np.random.default_rng(seed)
        params: Params = {}
        for step in self.steps:
            if step.param_shapes:
                params[step.name] = {pname: _init_value(pname, shape, gen)
                                     for pname, shape in step.param_shapes.items()}
        return params

    def apply(self, params: Mapping[str, Any], x: Array | Mapping[str, Array],
              taps: Sequence[str] | str | None = None) -> dict[str, Array]:
        """The requested taps (default: the network outputs) for input ``x``; stops at the deepest tap.

        Compiled as one XLA program per tap set and input shape (op-by-op dispatch of a deep net costs
        a compilation per op); inside an outer jit/vmap/grad it simply inlines.
        """
        wanted = resolve_taps(self.outputs if taps is None else taps, self.tap_names, self.name)
        return _jitted_apply(self, params, x, tuple(sorted(wanted)))

    def _apply(self, params: Mapping[str, Any], x: Array | Mapping[str, Array],
               wanted: tuple[str, ...]) -> dict[str, Array]:
        params = _unwrap_params(params, self.steps)
        blobs = self._input_blobs(x)
        stop = max(self._tap_ready[t] for t in wanted)
        values: dict[str, Array] = {}
        for step in self.steps[:stop + 1]:
            layer_params = params.get(step.name)
            if step.param_shapes and layer_params is None:
                raise ValueError(f"{self.name}: params have no entry for layer {step.name!r} "
                                 f"({step.type}); layers with params: {list(self.param_shapes)}")
            outs = step.fn(layer_params or {}, tuple(blobs[b] for b in step.bottoms))
            for top, value in zip(step.tops, outs):
                pre = f"{top}:pre"
                if pre in wanted and pre not in values:
                    values[pre] = value
                blobs[top] = value
        for name in wanted:
            if not name.endswith(":pre"):
                values[name] = blobs[name]
        return values

    __call__ = apply

    def _input_blobs(self, x: Array | Mapping[str, Array]) -> dict[str, Array]:
        """The input arrays by blob name, checked against the declared channel counts."""
        if not isinstance(x, Mapping):
            if len(self.inputs) != 1:
                raise ValueError(f"{self.name}: has inputs {list(self.inputs)}; pass a dict name -> array")
            x = {next(iter(self.inputs)): x}
        missing = [n for n in self.inputs if n not in x]
        if missing:
            raise ValueError(f"{self.name}: missing input(s) {missing}; inputs are {list(self.inputs)}")
        blobs = {}
        for name, shape in self.inputs.items():
            value = jnp.asarray(x[name])
            if not jnp.issubdtype(value.dtype, jnp.floating):
                value = value.astype(jnp.float32)
            if value.ndim != len(shape) + 1 or (value.ndim == 4 and value.shape[-1] != shape[-1]) \
                    or (value.ndim == 2 and value.shape[-1] != shape[-1]):
                raise ValueError(f"{self.name}: input {name!r} should be (N, {', '.join(map(str, shape))}) "
                                 f"(spatial size may differ), got {value.shape}")
            blobs[name] = value
        return blobs


_jitted_apply = jax.jit(PrototxtNet._apply, static_argnums=(0, 3))


def _init_value(name: str, shape: Shape, gen: np.random.Generator) -> np.ndarray:
    """One initial parameter array: kernels N(0, 0.01), PReLU slopes 0.25, biases 0."""
    if name == "kernel":
        return (0.01 * gen.standard_normal(shape)).astype(np.float32)
    return np.full(shape, 0.25 if name == "slope" else 0.0, np.float32)


def _unwrap_params(params: Mapping[str, Any], steps: Sequence[Step]) -> Mapping[str, Any]:
    """Accept both ``params`` and linen-style ``{"params": params}``."""
    if set(params) == {"params"} and not any(s.name == "params" for s in steps):
        return params["params"]
    return params


def _writers(steps: Sequence[Step]) -> tuple[dict[str, int], dict[str, int]]:
    """Blob -> index of the first step writing it, and of the last (they differ for in-place layers)."""
    first_writer: dict[str, int] = {}
    last_writer: dict[str, int] = {}
    for i, step in enumerate(steps):
        for top in step.tops:
            first_writer.setdefault(top, i)
            last_writer[top] = i
    return first_writer, last_writer


def tap_order(steps: Sequence[Step]) -> tuple[tuple[str, ...], dict[str, int]]:
    """Tap names in forward order and the step after which each is final."""
    first_writer, last_writer = _writers(steps)
    ready: dict[str, int] = {}
    for blob, i in first_writer.items():
        if last_writer[blob] != i:
            ready[f"{blob}:pre"] = i
        ready[blob] = last_writer[blob]
    # Stable sort keeps ":pre" before its blob and file order among taps ready at the same step.
    order = sorted(ready, key=lambda t: ready[t])
    return tuple(order), ready


def net_outputs(steps: Sequence[Step]) -> tuple[str, ...]:
    """Caffe's rule: blobs left unconsumed once every layer ran (in-place tops count as fresh)."""
    available: dict[str, None] = {}
    for step in steps:
        for b in step.bottoms:
            available.pop(b, None)
        for t in step.tops:
            available[t] = None
    return tuple(available)
