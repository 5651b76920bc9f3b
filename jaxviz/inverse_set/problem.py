"""What an inverse set is sampled from: the generator, the network's taps, the constrained neurons and ranges.

A problem is stated in the shared loop's terms (``jaxviz.core.loop``): a parameterization ``GeneratorCode``
whose render is the generator G (its weights are the run's ``aux_params``), a network function
``(net_params, images, taps) -> dict of taps`` (its weights the run's ``net_params``), and a ``Readout``
saying which taps hold the encoding ``E(G(c))`` and the constrained neurons ``f``. The constrained units
themselves are data (``units``, passed in the run's target), so one compilation serves every unit of a layer.

Any jax functions will do: ``problem_from_functions(G, E, f)`` builds an ``InverseSetProblem`` around plain
batched functions; ``model_problem`` does it for a (classifier ``Model``, generator ``Model``) pair, with E
the classifier up to its encoder layer and every neuron read from the same classifier pass.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.core.loop import NetApply
from jaxviz.core.objectives import Acts, Position, check_unit, unit_values
from jaxviz.core.params import GeneratorCode
from jaxviz.models import preprocessing as pp
from jaxviz.models.model import code_bounds as model_code_bounds, code_layer
from jaxviz.recipes.generator import generator_render

ENCODING = "encoding"   # the taps of the adapter around plain functions E and f
NEURONS = "neurons"


# ----- constraints and what one evaluation returns ---------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Constraint:
    """``z1 <= activation <= z2`` for one neuron: an fc unit, or a conv channel at ``position``."""

    layer: str
    unit: int
    z1: float
    z2: float
    position: Position = "center"

    def __post_init__(self):
        if not (math.isfinite(self.z1) and math.isfinite(self.z2)):
            raise ValueError(f"{self.name}: z1 and z2 must be finite, got [{self.z1}, {self.z2}]")
        if self.z1 > self.z2:
            raise ValueError(f"{self.name}: empty range, z1 = {self.z1} > z2 = {self.z2}")

    @property
    def name(self) -> str:
        """``layer[unit]`` (with the position for conv channels)."""
        pos = "" if self.position == "center" else f"@{self.position}"
        return f"{self.layer}[{self.unit}]{pos}"


class Forward(NamedTuple):
    """One evaluation of K codes: inputs ``G(c)``, encodings ``E(G(c))`` (K, m), activations ``f`` (K, P)."""

    images: jax.Array
    encodings: jax.Array
    activations: jax.Array


@dataclasses.dataclass(frozen=True)
class Readout:
    """Where one network pass holds E(x) and the constrained neurons; the neurons' units come as data.

    ``encodings(acts)`` is the encoder tap flattened per image, (K, m); ``activations(acts, units)`` the
    (K, P) values, neuron ``p`` being unit ``units[p]`` of tap ``neurons[p][0]`` at position ``neurons[p][1]``.
    """

    encoder: str
    neurons: tuple[tuple[str, Position], ...]

    @property
    def taps(self) -> tuple[str, ...]:
        """The taps one pass needs, sorted."""
        return tuple(sorted({self.encoder} | {tap for tap, _ in self.neurons}))

    def encodings(self, acts: Acts) -> jax.Array:
        """E(x) flattened: (K, m)."""
        e = acts[self.encoder]
        return e.reshape(e.shape[0], -1)

    def activations(self, acts: Acts, units: jax.Array) -> jax.Array:
        """(K, P): one column per constrained neuron."""
        return jnp.stack([jnp.take(unit_values(acts, tap, pos), units[p], axis=-1)
                          for p, (tap, pos) in enumerate(self.neurons)], axis=-1)


def forward(network: NetApply, param: GeneratorCode, readout: Readout, net_params: Any, aux_params: Any,
            codes: jax.Array, units: jax.Array) -> Forward:
    """One pure evaluation of ``codes``: render, one network pass for the readout's taps, read it out."""
    images = param.render(aux_params, codes)
    acts = network(net_params, images, readout.taps)
    return Forward(images, readout.encodings(acts), readout.activations(acts, units))


@dataclasses.dataclass(frozen=True, eq=False)
class InverseSetProblem:
    """What the sampler needs, in the shared loop's terms (see the module docstring).

    ``init(net_params, key, K)`` gives the K starting codes E(X0). Everything callable here is a pure
    function of the parameters passed to it, so the weights are inputs of the compiled programs, not
    constants; programs are cached by value (``jaxviz.core.fingerprint``), so an equal problem built
    again reuses them.
    """

    network: NetApply                                  # (net_params, images, taps) -> dict of taps
    param: GeneratorCode                               # the code; its render is G (aux params: G's weights)
    readout: Readout
    init: Callable[[Any, jax.Array, int], jax.Array]   # (net_params, key, K) -> starting codes E(X0)
    z1: np.ndarray                                     # (P,)
    z2: np.ndarray                                     # (P,)
    units: np.ndarray                                  # (P,) int32: the unit of each readout neuron
    net_params: Any = None
    aux_params: Any = None
    code_lower: np.ndarray | None = None               # (d,) or None: unbounded
    code_upper: np.ndarray | None = None
    names: tuple[str, ...] = ()


# ----- a problem from plain functions -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Render:
    """G as a render ``(aux_params, codes) -> images`` (plain functions carry no parameters)."""

    generator: Callable[[jax.Array], jax.Array]

    def __call__(self, aux_params: Any, codes: jax.Array) -> jax.Array:
        return self.generator(codes)


@dataclasses.dataclass(frozen=True)
class _FunctionNetwork:
    """E and f as one network function with the taps ``"neurons"`` (K, P) and ``"encoding"`` (K, m)."""

    encoder: Callable[[jax.Array], jax.Array]
    neurons: Callable[[jax.Array], jax.Array]

    def __call__(self, params: Any, x: jax.Array, taps: Sequence[str]) -> dict:
        acts = jnp.reshape(self.neurons(x), (x.shape[0], -1))
        return {NEURONS: acts, ENCODING: jnp.reshape(self.encoder(x), (x.shape[0], -1))}


@dataclasses.dataclass(frozen=True)
class _FunctionInit:
    """E(X0) for X0 = init_inputs(key, K)."""

    encoder: Callable[[jax.Array], jax.Array]
    init_inputs: Callable[[jax.Array, int], jax.Array]

    def __call__(self, params: Any, key: jax.Array, k: int) -> jax.Array:
        return jnp.reshape(self.encoder(self.init_inputs(key, k)), (k, -1))


def problem_from_functions(generator: Callable[[jax.Array], jax.Array],
                           encoder: Callable[[jax.Array], jax.Array],
                           neurons: Callable[[jax.Array], jax.Array],
                           z1: Sequence[float] | float, z2: Sequence[float] | float,
                           init_inputs: Callable[[jax.Array, int], jax.Array],
                           code_lower: Any = None, code_upper: Any = None,
                           names: Sequence[str] = ()) -> InverseSetProblem:
    """A problem from plain batched functions G(codes), E(inputs), f(inputs) -> (K, P); X0 = init_inputs(key, K)."""
    z1a, z2a = _ranges(z1, z2)
    init = _FunctionInit(encoder, init_inputs)
    code_size = int(jax.eval_shape(lambda key: init(None, key, 1), jax.random.key(0)).shape[1])
    return InverseSetProblem(_FunctionNetwork(encoder, neurons), GeneratorCode(_Render(generator), code_size),
                             Readout(ENCODING, ((NEURONS, "center"),) * len(z1a)), init, z1a, z2a,
                             np.arange(len(z1a), dtype=np.int32), None, None,
                             _opt_array(code_lower), _opt_array(code_upper),
                             tuple(names) or tuple(f"neuron {p}" for p in range(len(z1a))))


def _ranges(z1: Any, z2: Any) -> tuple[np.ndarray, np.ndarray]:
    z1a, z2a = np.atleast_1d(np.asarray(z1, np.float32)), np.atleast_1d(np.asarray(z2, np.float32))
    if z1a.shape != z2a.shape or z1a.ndim != 1:
        raise ValueError(f"z1 and z2 must be matching vectors, got shapes {z1a.shape} and {z2a.shape}")
    if not (np.all(np.isfinite(z1a)) and np.all(np.isfinite(z2a))):
        raise ValueError("z1 and z2 must be finite")
    bad = np.flatnonzero(z1a > z2a)
    if bad.size:
        raise ValueError(f"empty range for neuron {int(bad[0])}: z1 = {z1a[bad[0]]} > z2 = {z2a[bad[0]]}")
    return z1a, z2a


def _opt_array(x: Any) -> np.ndarray | None:
    return None if x is None else np.asarray(x, np.float32)


# ----- the (classifier Model, generator Model) pair ----------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class _ModelInit:
    """Starting codes E(X0): X0 uniform over the classifier's pixel range, in its input space."""

    network: NetApply
    readout: Readout
    input_shape: tuple[int, ...]
    pixel_scale: float
    mean: np.ndarray   # per channel, or Caffe's mean image

    def __call__(self, params: Any, key: jax.Array, k: int) -> jax.Array:
        x = jax.random.uniform(key, (k, *self.input_shape), jnp.float32, 0.0, self.pixel_scale)
        x = x - self.mean
        return self.readout.encodings(self.network(params, x, self.readout.taps))


def _input_mean(preprocessing: dict, shape: tuple[int, ...]) -> np.ndarray:
    return pp.mean_array({"mean": 0.0, **preprocessing}, shape[0], shape[1])


def default_code_bounds(generator: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """[0, ub]: DGN-AM's rule (its codes are activations after a ReLU); ub by ``jaxviz.models.code_bounds``
    (None when none is known)."""
    size = int(generator.config.code_size)
    try:
        upper = model_code_bounds(generator)
    except ValueError:
        upper = None
    return np.zeros(size, np.float32), upper


def model_problem(classifier: Any, generator: Any, constraints: Sequence[Constraint],
                  encoder_layer: str | None = None, code_bounds: tuple[Any, Any] | None = None) -> InverseSetProblem:
    """The problem for a (classifier Model, generator Model) pair; E = classifier up to ``encoder_layer``
    (default: the generator's code layer, fc6 for DGN-AM's generator)."""
    constraints = list(constraints)
    encoder_layer = encoder_layer or code_layer(generator)
    if not constraints:
        raise ValueError("give at least one Constraint")
    check_constraints(classifier, constraints, encoder_layer)
    readout = Readout(encoder_layer, tuple((_live_layer(classifier, c), c.position) for c in constraints))
    pre = classifier.preprocessing
    shape = tuple(classifier.input_shape)
    init = _ModelInit(classifier.function, readout, shape, float(pre.get("pixel_scale", 255.0)),
                      _input_mean(pre, shape))
    lower, upper = default_code_bounds(generator) if code_bounds is None else code_bounds
    param = GeneratorCode(generator_render(generator), int(generator.config.code_size))
    return InverseSetProblem(classifier.function, param, readout, init,
                             *_ranges([c.z1 for c in constraints], [c.z2 for c in constraints]),
                             np.asarray([int(c.unit) for c in constraints], np.int32),
                             classifier.params, generator.params, _opt_array(lower), _opt_array(upper),
                             tuple(c.name for c in constraints))


def _live_layer(classifier: Any, c: Constraint) -> str:
    # For z1 > 0, ReLU(a) in [z1, z2] exactly when a in [z1, z2]: constrain the value before the in-place ReLU
    # (Caffe's "<layer>:pre" tap) when there is one. Same inverse set, but a code whose unit sits at 0
    # still gets a gradient (after the ReLU it would be stuck there: seen on conv5 intersections).
    if c.z1 <= 0 or c.layer.endswith(":pre"):
        return c.layer
    x = jax.ShapeDtypeStruct((1, *classifier.input_shape), jnp.float32)
    try:
        jax.eval_shape(lambda p, x: classifier.apply(p, x, (c.layer + ":pre",)), classifier.params, x)
    except ValueError:
        return c.layer
    return c.layer + ":pre"


def check_constraints(classifier: Any, constraints: Sequence[Constraint], encoder_layer: str = "fc6") -> None:
    """Clear errors before compiling: unknown layers (ValueError), units out of range (IndexError), positions."""
    taps = tuple(sorted({encoder_layer} | {c.layer for c in constraints}))
    x = jax.ShapeDtypeStruct((1, *classifier.input_shape), jnp.float32)
    shapes = jax.eval_shape(lambda p, x: classifier.apply(p, x, taps), classifier.params, x)
    for c in constraints:
        shape = shapes[c.layer].shape
        check_unit(c.layer, int(c.unit), shape[-1])
        if len(shape) == 4:
            jax.eval_shape(lambda a: unit_values({c.layer: a}, c.layer, c.position), shapes[c.layer])


__all__ = ["Constraint", "Forward", "Readout", "InverseSetProblem", "forward", "problem_from_functions",
           "model_problem", "check_constraints", "default_code_bounds"]
