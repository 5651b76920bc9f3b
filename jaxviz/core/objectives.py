"""Objectives: pure functions of a forward pass's activations, composed with ``+``, ``*`` and ``-``.

An ``Objective`` maps ``(acts, target) -> scalar`` to *maximize*. ``acts`` is the dict a network returns
for the taps the objective names, plus two pseudo-taps the optimization loop adds: ``"image"`` (the
image fed to the network, before robustness transforms) and ``"code"`` (the generator code, when the
image is ``G(code)``). Arrays carry the batch of images of one run as their first axis; objectives sum
over it, so each image's gradient is its own.

``target`` is the run-time argument of an optimization: a unit index, a direction, or reference features. An
objective built with ``index=None`` reads its unit from ``target``, so one compiled program serves every
unit of a layer (``jax.vmap`` over targets); a fixed ``index`` bakes the unit in. Combining objectives is
Lucid's algebra: ``unit("fc8", 3) - 0.5 * unit("fc8", 5) - 1e-3 * priors.l2()``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.core import directions, interpolation
from jaxviz.core.directions import reference_activations

Acts = Mapping[str, jax.Array]
Position = str | tuple[int, int]  # "center", "mean", or (row, col)

IMAGE = "image"
CODE = "code"
PSEUDO_TAPS = frozenset({IMAGE, CODE})


@dataclasses.dataclass(frozen=True)
class Objective:
    """A scalar to maximize, as a function of activations and the run's target; composes like Lucid's."""

    fn: Callable[[Acts, Any], jax.Array]
    taps: frozenset[str]
    name: str = "objective"
    # The unit whose rank in its layer a result reports, when the objective is about one unit.
    unit_layer: str | None = None
    unit_position: Position = "mean"
    unit_index: int | None = None

    def __call__(self, acts: Acts, target: Any = None) -> jax.Array:
        return self.fn(acts, target)

    @property
    def network_taps(self) -> tuple[str, ...]:
        """The network layers this objective reads (pseudo-taps excluded), sorted for a stable jit key."""
        return tuple(sorted(self.taps - PSEUDO_TAPS))

    def __add__(self, other: "Objective | float") -> "Objective":
        other = _as_objective(other)
        return Objective(lambda acts, t: self.fn(acts, t) + other.fn(acts, t), self.taps | other.taps,
                         f"({self.name} + {other.name})", *_unit_of(self, other))

    __radd__ = __add__

    def __mul__(self, factor: float | jax.Array) -> "Objective":
        if isinstance(factor, Objective):
            other = factor
            return Objective(lambda acts, t: self.fn(acts, t) * other.fn(acts, t), self.taps | other.taps,
                             f"({self.name} * {other.name})")
        return Objective(lambda acts, t: factor * self.fn(acts, t), self.taps, f"{factor} * {self.name}",
                         self.unit_layer, self.unit_position, self.unit_index)

    __rmul__ = __mul__

    def __neg__(self) -> "Objective":
        return Objective(lambda acts, t: -self.fn(acts, t), self.taps, f"-{self.name}")

    def __sub__(self, other: "Objective | float") -> "Objective":
        return self + (-_as_objective(other))

    def __rsub__(self, other: float) -> "Objective":
        return _as_objective(other) + (-self)

    def __truediv__(self, divisor: float) -> "Objective":
        return self * (1.0 / divisor)


def _as_objective(value: "Objective | float") -> Objective:
    if isinstance(value, Objective):
        return value
    return Objective(lambda acts, t: jnp.asarray(value, jnp.float32), frozenset(), repr(value))


def _unit_of(a: Objective, b: Objective) -> tuple[str | None, Position, int | None]:
    # A sum keeps the unit of its one unit-objective term (a unit objective plus penalties stays a unit
    # objective); with two unit terms there is no single unit to rank.
    units = [o for o in (a, b) if o.unit_layer is not None]
    if len(units) == 1:
        return units[0].unit_layer, units[0].unit_position, units[0].unit_index
    return None, "mean", None


# ----- reading one unit's value ---------------------------------------------------------------------

def unit_values(acts: Acts, layer: str, position: Position = "mean") -> jax.Array:
    """(batch, units) values of a layer: fc layers as they are, conv channels at a position or averaged."""
    a = acts[layer]
    if a.ndim == 2:
        return a
    if a.ndim != 4:
        raise ValueError(f"layer {layer!r} has activations of shape {a.shape}; expected (N, units) or NHWC")
    if position == "mean":
        return a.mean(axis=(1, 2))
    if position == "center":
        return a[:, a.shape[1] // 2, a.shape[2] // 2, :]
    row, col = position
    if not (0 <= row < a.shape[1] and 0 <= col < a.shape[2]):
        raise ValueError(f"position {position} is outside layer {layer!r} of spatial size {a.shape[1:3]}")
    return a[:, row, col, :]


def require_image(x: jax.Array, what: str) -> None:
    """A clear error when ``what`` (a penalty, operator or transform on images) meets a non-image array."""
    if x.ndim != 4:
        raise ValueError(f"{what} needs NHWC images; its tap holds an array of shape {x.shape}")


def _index(index: int | None, target: Any) -> Any:
    return target if index is None else index


def check_unit(layer: str, index: int, num_units: int) -> None:
    """A clear error for a unit index outside its layer (only checkable for concrete indices)."""
    if not 0 <= int(index) < num_units:
        raise IndexError(f"unit {index} is out of range for layer {layer!r} with {num_units} units")


def _pick(values: jax.Array, index: Any, layer: str) -> jax.Array:
    # Python indices are checked here; traced ones (vmap over units) are checked before tracing.
    if isinstance(index, (int, np.integer)):
        check_unit(layer, index, values.shape[-1])
    return jnp.take(values, jnp.asarray(index, jnp.int32), axis=-1)


# ----- constructors -----------------------------------------------------------------------------------

def unit(layer: str, index: int | None = None, position: Position = "center") -> Objective:
    """Raw activation of one unit: an fc unit, or a conv channel at ``position`` ("center", "mean", (r, c))."""
    def fn(acts: Acts, target: Any) -> jax.Array:
        return _pick(unit_values(acts, layer, position), _index(index, target), layer).sum()
    return Objective(fn, frozenset({layer}), f"unit({layer}, {index if index is not None else 'target'})",
                     layer, position, index)


def channel(layer: str, index: int | None = None) -> Objective:
    """Spatial mean of one conv channel (Lucid's ``channel``)."""
    return dataclasses.replace(unit(layer, index, "mean"), name=f"channel({layer}, {index})")


def softmax(layer: str, index: int | None = None, position: Position = "center") -> Objective:
    """Softmax probability of a unit across its layer (survey seed Table 1b)."""
    def fn(acts: Acts, target: Any) -> jax.Array:
        p = jax.nn.softmax(unit_values(acts, layer, position), axis=-1)
        return _pick(p, _index(index, target), layer).sum()
    return Objective(fn, frozenset({layer}), f"softmax({layer}, {index})", layer, position, index)


def log_softmax(layer: str, index: int | None = None, position: Position = "center",
                temperature: float = 1.0) -> Objective:
    """Log-softmax selectivity of a unit across its layer, with its exact gradient (survey seed Table 1c).

    d/dx log s_c = d a_c/dx - sum_j s_j d a_j/dx: the target rises while every other unit is pushed down
    in proportion to its own probability, so the image becomes selective for the target. A ``temperature``
    T computes ``T log softmax(a / T)``: T = 1 is the plain objective; a larger T spreads the push over
    more competitors (T -> inf: the target minus the layer's mean), a smaller one keeps it on the strongest
    (T -> 0: the margin over the best other unit).
    """
    if not temperature > 0:
        raise ValueError(f"log_softmax needs a temperature > 0, got {temperature}")

    def fn(acts: Acts, target: Any) -> jax.Array:
        ls = jax.nn.log_softmax(unit_values(acts, layer, position) / temperature, axis=-1)
        return temperature * _pick(ls, _index(index, target), layer).sum()
    name = f"log_softmax({layer}, {index})" if temperature == 1.0 else f"log_softmax({layer}, {index}, T={temperature:g})"
    return Objective(fn, frozenset({layer}), name, layer, position, index)


def weighted_units(layer: str, weights: Mapping[int, float] | Sequence[float],
                   position: Position = "center") -> Objective:
    """A weighted sum of units of one layer: ``{3: 1.0, 5: -0.5}`` maximizes unit 3 while lowering unit 5."""
    def fn(acts: Acts, target: Any) -> jax.Array:
        values = unit_values(acts, layer, position)
        if isinstance(weights, Mapping):
            return sum(w * values[:, i] for i, w in weights.items()).sum()
        return (values @ jnp.asarray(weights, values.dtype)).sum()
    return Objective(fn, frozenset({layer}), f"weighted_units({layer})")


def feature_inversion(layer: str, reference: jax.Array | None = None) -> Objective:
    """Negated normalized feature distance ``-||phi(x) - phi(x0)||^2 / ||phi(x0)||^2`` (Mahendran & Vedaldi).

    ``reference`` is phi(x0) with its batch axis; ``None`` takes it from the run's target.
    """
    def fn(acts: Acts, target: Any) -> jax.Array:
        ref = target if reference is None else reference
        phi = acts[layer]
        axes = tuple(range(1, phi.ndim))
        dist = jnp.sum(jnp.square(phi - ref), axis=axes) / jnp.sum(jnp.square(ref), axis=axes)
        return -dist.sum()
    return Objective(fn, frozenset({layer}), f"feature_inversion({layer})")


def deepdream(layer: str) -> Objective:
    """DeepDream's objective: the mean squared activation of a whole layer."""
    def fn(acts: Acts, target: Any) -> jax.Array:
        a = acts[layer]
        return jnp.mean(jnp.square(a), axis=tuple(range(1, a.ndim))).sum()
    return Objective(fn, frozenset({layer}), f"deepdream({layer})")


def diversity(layer: str) -> Objective:
    """Lucid's batch diversity: minus the mean pairwise cosine similarity of the images' Gram matrices."""
    def fn(acts: Acts, target: Any) -> jax.Array:
        a = acts[layer]
        n = a.shape[0]
        flat = a.reshape(n, -1, a.shape[-1])
        grams = jnp.einsum("nsc,nsd->ncd", flat, flat).reshape(n, -1)
        grams = grams / (jnp.linalg.norm(grams, axis=-1, keepdims=True) + 1e-12)
        sim = grams @ grams.T
        return -(sim.sum() - jnp.trace(sim)) / n
    return Objective(fn, frozenset({layer}), f"diversity({layer})")


# ----- directions and caricatures (the math: core/directions.py) -------------------------------------

def direction(layer: str, vector: Any = None, position: Position = "mean") -> Objective:
    """Dot product of a layer's activation (at ``position``, or averaged over space) with ``vector``.

    ``"mean"`` is Lucid's ``direction`` (the mean over positions of the dot product is the dot product with
    the mean), ``"center"`` or ``(r, c)`` its ``direction_neuron``; ``vector=None`` reads it from the target.
    """
    def fn(acts: Acts, target: Any) -> jax.Array:
        values = unit_values(acts, layer, position)
        v = directions.check_vector(target if vector is None else vector, values.shape[-1], layer)
        return directions.dot(values, v).sum()
    return Objective(fn, frozenset({layer}), f"direction({layer})")


def direction_cosine(layer: str, vector: Any = None, power: float = 1.0, position: Position = "mean",
                     floor: float = directions.COSINE_FLOOR) -> Objective:
    """``dot(a, v) * max(cos(a, v), floor) ** power`` (Lucid #116, Horama, Xplique); power 0 is ``direction``."""
    def fn(acts: Acts, target: Any) -> jax.Array:
        values = unit_values(acts, layer, position)
        v = directions.check_vector(target if vector is None else vector, values.shape[-1], layer)
        return directions.dot_cosine(values, v, power, floor).sum()
    return Objective(fn, frozenset({layer}), f"direction_cosine({layer}, {power})")


def caricature(layer: str, reference: jax.Array | None = None, power: float = 1.0,
               floor: float = directions.COSINE_FLOOR) -> Objective:
    """Lucid's caricature (issue #121): dot times cosine^power with a real image's whole-layer activations.

    ``reference`` is the real image's activations at ``layer`` with their batch axis (one for every image,
    or one per image; ``directions.reference_activations`` computes them once); ``None`` reads the target,
    so one compiled program caricatures many images.
    """
    def fn(acts: Acts, target: Any) -> jax.Array:
        a = acts[layer]
        ref = directions.check_reference(target if reference is None else reference, a, layer)
        return directions.dot_cosine(directions.flatten(a), directions.flatten(ref), power, floor).sum()
    return Objective(fn, frozenset({layer}), f"caricature({layer}, {power})")


# ----- interpolation across a run's images (the math: core/interpolation.py) --------------------------

def channel_interpolate(layer: str, unit_a: int, unit_b: int, position: Position = "mean") -> Objective:
    """Lucid's ``channel_interpolate``: image i of a run's n maximizes ``(1 - t_i) a + t_i b``, t_i = i/(n-1).

    A batch objective like ``diversity``: the images of one run (``Method.images_per_run``) are the steps
    of the interpolation; add ``alignment`` so neighbours stay alike.
    """
    def fn(acts: Acts, target: Any) -> jax.Array:
        values = unit_values(acts, layer, position)
        a, b = (_pick(values, u, layer) for u in (unit_a, unit_b))
        return interpolation.interpolate(a, b).sum()
    return Objective(fn, frozenset({layer}), f"channel_interpolate({layer}, {unit_a}, {unit_b})")


def alignment(layer: str, decay_ratio: float = 2.0, max_distance: int = interpolation.MAX_DISTANCE) -> Objective:
    """Lucid's ``alignment``: minus the mean squared distance of images d apart in the batch, weighted 1/ratio^d."""
    def fn(acts: Acts, target: Any) -> jax.Array:
        return -interpolation.neighbour_penalty(acts[layer], decay_ratio, max_distance)
    return Objective(fn, frozenset({layer}), f"alignment({layer}, {decay_ratio})")


KINDS = ("unit", "channel", "softmax", "log_softmax")


def parse_position(text: str) -> Position:
    """``"center"``, ``"mean"`` or ``"ROW,COL"`` -> a position (a clear error otherwise)."""
    t = text.strip().lower()
    if t in ("center", "mean"):
        return t
    parts = t.split(",")
    if len(parts) == 2 and all(p.strip().lstrip("-").isdigit() for p in parts):
        return (int(parts[0]), int(parts[1]))
    raise ValueError(f"position {text!r}: expected 'center', 'mean' or ROW,COL")


def parse(spec: str, kind: str = "unit") -> Objective:
    """An objective from text: ``"fc8:7"``, ``"conv3:5"``, ``"fc6:pre:12"``, ``"conv5:3@mean"``, ``"conv5:3@6,6"``.

    ``LAYER:UNIT`` names a unit (the last ``:`` field is the index, so ``:pre`` layers work), ``@POSITION``
    where a conv channel is read (default: the centre), ``kind`` one of ``KINDS``.
    """
    if kind not in KINDS:
        raise ValueError(f"objective kind {kind!r}: expected one of {', '.join(KINDS)}")
    body, _, where = spec.partition("@")
    layer, sep, index = body.rpartition(":")
    if not sep or not layer or not index.strip().isdigit():
        raise ValueError(f"objective {spec!r}: expected LAYER:UNIT[@POSITION], e.g. 'fc8:7' or 'conv3:5@mean'")
    position = parse_position(where) if where else ("mean" if kind == "channel" else "center")
    if kind == "channel":
        return channel(layer, int(index))
    return {"unit": unit, "softmax": softmax, "log_softmax": log_softmax}[kind](layer, int(index), position)


def rank_in_layer(acts: Acts, layer: str, index: Any, position: Position = "mean") -> jax.Array:
    """Per image, how many units of ``layer`` exceed the target unit (0: the target is top-ranked)."""
    values = unit_values(acts, layer, position)
    own = jnp.take(values, jnp.asarray(index, jnp.int32), axis=-1)[..., None]
    return jnp.sum(values > own, axis=-1)


__all__ = ["Acts", "Position", "IMAGE", "CODE", "PSEUDO_TAPS", "KINDS", "Objective", "unit_values", "require_image",
           "check_unit", "unit", "channel", "softmax", "log_softmax", "weighted_units", "feature_inversion",
           "deepdream", "diversity", "direction", "direction_cosine", "caricature",
           "channel_interpolate", "alignment", "reference_activations", "parse", "parse_position", "rank_in_layer"]
