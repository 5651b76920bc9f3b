"""Your own JAX network as a ``Model``: a Flax linen or NNX module, an Equinox module, or a plain function.

Every jaxviz run reads a network through one pure ``apply(params, x, taps) -> {tap: activation}`` on a
batch ``x`` of shape ``(N, *input_shape)``. The functions here build that from what a user has:

- ``from_function(forward, params, input_shape)``: ``forward(params, x)`` returns a dict of named
  activations (a bare array is the tap ``"output"``);
- ``from_flax(module, params, input_shape)``: a linen module; taps are the outputs of its submodules by
  path (``capture_intermediates``: ``"Dense_0"``, ``"block/Conv_1"``), the values it ``sow``s into
  ``"intermediates"`` (``"block/features"``) and ``"output"``;
- ``from_nnx(module, input_shape)``: an NNX module; taps are the outputs of its submodules' methods by
  path (``nnx.capture`` with ``method_outputs``), what it sows as ``nnx.Intermediate``, and ``"output"``;
- ``from_equinox(module, input_shape)``: an Equinox module (any callable pytree) called on one example;
  taps are ``"output"``, the keys of a dict it returns, or, for ``eqx.nn.Sequential``, ``"layers[i]"``.

A submodule's output is what its ``__call__`` returns: a Dense layer's is the pre-activation, a ReLU
applied as a function is no module. Sow the rectified values you want to see, or return them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxviz.models import preprocessing as preprocessing_mod
from jaxviz.models.model import Model

Forward = Callable[[Any, jax.Array], Mapping[str, jax.Array]]
OUTPUT = "output"


class UnknownTapError(KeyError):
    """A tap the network does not produce; the message names it and lists the ones it has."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


@dataclasses.dataclass(frozen=True, eq=False)
class FunctionNetwork:
    """A network given by a forward function that returns all its taps; ``apply`` picks the ones asked for."""

    forward: Forward                 # (params, x of shape (N, *input_shape)) -> {tap: (N, ...) array}
    input_shape: tuple[int, ...]     # one example's shape, e.g. (28, 28, 1)
    tap_names: tuple[str, ...]       # every tap forward returns, in its order
    name: str = "function"           # what the network is called in messages and cards

    def apply(self, params: Any, x: jax.Array, taps: Sequence[str] | None = None) -> dict[str, jax.Array]:
        """Pure forward pass: the activations of ``taps`` (all of them when None)."""
        acts = dict(self.forward(params, x))
        if taps is None:
            return acts
        check_taps(taps, tuple(acts), self.name)
        return {t: acts[t] for t in taps}


def check_taps(asked: Sequence[str], known: Sequence[str], network: str) -> None:
    """``UnknownTapError`` naming the first tap of ``asked`` that ``known`` lacks, and listing ``known``."""
    for tap in asked:
        if tap not in known:
            shown = ", ".join(known[:40]) + (", ..." if len(known) > 40 else "")
            raise UnknownTapError(f"the network {network!r} has no tap {tap!r}; its taps are: {shown}")


def _as_taps(out: Any) -> dict[str, jax.Array]:
    if isinstance(out, Mapping):
        return {str(k): v for k, v in out.items()}
    return {OUTPUT: out}


def _discover_taps(forward: Forward, params: Any, input_shape: tuple[int, ...]) -> tuple[str, ...]:
    names: list[str] = []

    def record(p: Any, x: jax.Array) -> Mapping[str, jax.Array]:
        acts = forward(p, x)
        names.extend(acts)  # the dict's own order (jax would return its keys sorted)
        return acts
    jax.eval_shape(record, params, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    return tuple(names)


def _model(forward: Forward, params: Any, input_shape: Sequence[int], name: str,
           preprocessing: Mapping[str, Any] | None, architecture: str, class_layer: str | None) -> Model:
    shape = tuple(int(d) for d in input_shape)
    net = FunctionNetwork(forward, shape, _discover_taps(forward, params, shape), name)
    check_taps([class_layer] if class_layer else [], net.tap_names, name)
    metadata: dict[str, Any] = {"architecture": architecture, "name": name}
    # Without an input space, pictures are shown stretched to their own range rather than as Caffe images.
    metadata["preprocessing"] = (dict(preprocessing) if preprocessing is not None
                                 else {"display": preprocessing_mod.STRETCH})
    if class_layer is not None:
        metadata["class_layer"] = class_layer  # its units are classes: scores ask the judge for a label
    return Model(architecture, net, params, metadata)


def from_function(forward: Callable[[Any, jax.Array], Any], params: Any, input_shape: Sequence[int], *,
                  name: str = "function", preprocessing: Mapping[str, Any] | None = None,
                  class_layer: str | None = None) -> Model:
    """A ``Model`` from ``forward(params, x)`` on a batch, returning a dict of taps (or one array: ``"output"``).

    The keywords, for every ``from_*``: ``preprocessing`` is the input space's card (``channel_order``,
    ``pixel_scale``, ``mean``; without it pictures are stretched to their own range, and a card equal to the
    embedded pair's gets its reference digits and judge); ``class_layer`` names the tap whose units are
    classes (scored with the judge's label, like ``fc8``).
    """
    return _model(lambda p, x: _as_taps(forward(p, x)), params, input_shape, name, preprocessing, "function",
                  class_layer)


# ----- Flax linen --------------------------------------------------------------------------------------------

def _path_name(path: Sequence[str]) -> str:
    return "/".join(p for p in path if p != "__call__")


def _flatten_intermediates(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[str, jax.Array]:
    """``{"block": {"Conv_0": {"__call__": (y,)}}}`` -> ``{"block/Conv_0": y}`` (several calls: ``#k``)."""
    taps: dict[str, jax.Array] = {}
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            taps.update(_flatten_intermediates(value, path))
            continue
        values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        name = _path_name(path) or OUTPUT
        if len(values) == 1:
            taps[name] = values[0]
        else:
            taps.update({f"{name}#{k}": v for k, v in enumerate(values)})
    return taps


def from_flax(module: nn.Module, params: Any, input_shape: Sequence[int], *, method: Any = None,
              name: str | None = None, preprocessing: Mapping[str, Any] | None = None,
              class_layer: str | None = None) -> Model:
    """A ``Model`` from a Flax linen module and its params (``{"params": ...}`` or the params themselves)."""
    variables = dict(params) if isinstance(params, Mapping) and "params" in params else {"params": params}
    rest = {k: v for k, v in variables.items() if k != "params"}  # batch statistics and other collections

    def forward(p: Any, x: jax.Array) -> dict[str, jax.Array]:
        live: list[Any] = []

        def note_collection(next_fun, args, kwargs, context):
            # The root scope's own collection is a plain dict filled in call order (the returned state is
            # sorted by name), so it gives the taps in forward order.
            if not live:
                live.append(context.module.scope.root)
            return next_fun(*args, **kwargs)
        with nn.intercept_methods(note_collection):
            out, state = module.apply({"params": p, **rest}, x, method=method, capture_intermediates=True,
                                      mutable=["intermediates"])
        taps = _flatten_intermediates(state.get("intermediates", {}))
        order = list(_flatten_intermediates(getattr(live[0], "_variables", {}).get("intermediates", {}))) if live else []
        taps = {k: taps[k] for k in [*(k for k in order if k in taps), *(k for k in taps if k not in order)]}
        taps.pop(OUTPUT, None)
        taps[OUTPUT] = out
        return taps
    return _model(forward, variables["params"], input_shape, name or type(module).__name__, preprocessing,
                  "flax", class_layer)


# ----- Flax NNX ----------------------------------------------------------------------------------------------

def _state_taps(state: Any) -> dict[str, jax.Array]:
    taps: dict[str, jax.Array] = {}
    for path, value in nnx.to_flat_state(state):
        value = value.get_value() if hasattr(value, "get_value") else getattr(value, "value", value)
        parts = tuple(str(p) for p in path)
        taps.update(_flatten_intermediates({parts[-1]: value}, parts[:-1]))
    return taps


def from_nnx(module: nnx.Module, input_shape: Sequence[int], *, name: str | None = None,
             preprocessing: Mapping[str, Any] | None = None, class_layer: str | None = None) -> Model:
    """A ``Model`` from an NNX module: its parameters become the pure function's ``params``."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def forward(p: Any, x: jax.Array) -> dict[str, jax.Array]:
        m = nnx.merge(graphdef, p, rest)
        out, captured = nnx.capture(m, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)
        taps = _state_taps(captured)
        taps[OUTPUT] = out
        return taps
    return _model(forward, params, input_shape, name or type(module).__name__, preprocessing, "nnx", class_layer)


# ----- Equinox (any callable pytree) -------------------------------------------------------------------------

def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def _partition(tree: Any) -> tuple[Any, Any]:
    """(arrays, the rest): Equinox's ``partition(tree, is_array)``, done with jax.tree_util alone."""
    arrays = jax.tree_util.tree_map(lambda l: l if _is_array(l) else None, tree)
    static = jax.tree_util.tree_map(lambda l: None if _is_array(l) else l, tree)
    return arrays, static


def _combine(arrays: Any, static: Any) -> Any:
    return jax.tree_util.tree_map(lambda a, s: s if a is None else a, arrays, static,
                                  is_leaf=lambda l: l is None)


def _sequential_layers(module: Any) -> tuple[Any, ...] | None:
    if type(module).__name__ == "Sequential" and type(module).__module__.startswith("equinox"):
        return tuple(module.layers)
    return None


def from_equinox(module: Any, input_shape: Sequence[int], *, name: str | None = None,
                 preprocessing: Mapping[str, Any] | None = None, class_layer: str | None = None) -> Model:
    """A ``Model`` from an Equinox module called on one example (``vmap``-ped over the batch here)."""
    params, static = _partition(module)

    def one(p: Any, x: jax.Array) -> dict[str, jax.Array]:
        m = _combine(p, static)
        layers = _sequential_layers(m)
        if layers is None:
            return _as_taps(m(x))
        taps = {}
        for i, layer in enumerate(layers):
            x = layer(x)
            taps[f"layers[{i}]"] = x
        taps[OUTPUT] = x
        return taps

    def forward(p: Any, x: jax.Array) -> dict[str, jax.Array]:
        return jax.vmap(one, in_axes=(None, 0))(p, x)
    return _model(forward, params, input_shape, name or type(module).__name__, preprocessing, "equinox",
                  class_layer)


__all__ = ["FunctionNetwork", "UnknownTapError", "check_taps", "from_function", "from_flax", "from_nnx",
           "from_equinox", "OUTPUT"]
