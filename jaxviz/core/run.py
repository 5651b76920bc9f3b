"""The library entry points: one visualization, or a batch over seeds and units in one compiled program.

A network is anything with ``function`` (a pure ``(params, x, taps) -> acts``), ``params`` and
``input_shape`` (``Network``); ``jaxviz.models.Model`` is one.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.core.loop import Method, Result, compiled_run
from jaxviz.core.objectives import Objective, check_unit
from jaxviz.core.params import Parameterization, Pixels
from jaxviz.core.updates import gradient_ascent


class Network(Protocol):
    """What the engine needs of a network: a pure function, its parameters and its input shape."""

    function: Callable[[Any, jax.Array, Sequence[str]], Mapping[str, jax.Array]]
    params: Any
    input_shape: tuple[int, ...]


class OptimizationFailed(Warning):
    """Some runs of a batch met a NaN or Inf and were stopped; the others went on."""


def _default_param(net: Network) -> Pixels:
    shape = getattr(net, "input_shape", None)
    if shape is None:
        raise ValueError("pass a parameterization: the network does not declare its input shape")
    return Pixels(tuple(shape))


def _method(method: Method | None, steps: int | None) -> Method:
    if method is None:
        return Method(steps if steps is not None else 200, gradient_ascent(1.0))
    return method if steps is None else dataclasses.replace(method, steps=steps)


def check_setup(net: Network, objective: Objective, param: Parameterization, aux_params: Any,
                targets: Any = None) -> None:
    """Clear errors before compiling: image shape vs the network, unknown layers, unit indices out of range."""
    image = jax.eval_shape(lambda a, k: param.render(a, param.init(k, 1)), aux_params, jax.random.key(0))
    expected = getattr(net, "input_shape", None)
    if expected is not None and tuple(image.shape[1:]) != tuple(expected):
        raise ValueError(f"the parameterization renders images of shape {tuple(image.shape[1:])}, "
                         f"the network takes {tuple(expected)}")
    taps = tuple(objective.network_taps) or (objective.unit_layer,)
    if objective.unit_layer is not None:
        taps = tuple(sorted(set(taps) | {objective.unit_layer}))
    shapes = jax.eval_shape(lambda p, x: net.function(p, x, taps), net.params, image)
    if objective.unit_layer is None or targets is None or objective.unit_index is not None:
        return
    width = shapes[objective.unit_layer].shape[-1]
    for t in np.atleast_1d(np.asarray(targets)).ravel():
        check_unit(objective.unit_layer, int(t), width)


def _report_failures(result: Result) -> None:
    failed = np.atleast_1d(np.asarray(result.failed_step))
    bad = np.flatnonzero(failed >= 0)
    if bad.size:
        where = ", ".join(f"run {i} at step {failed[i]}" for i in bad[:20])
        warnings.warn(f"NaN/Inf during optimization: {where}{' ...' if bad.size > 20 else ''}; those runs "
                      f"were stopped and keep their last finite values, the others went on",
                      OptimizationFailed, stacklevel=4)


def optimize(net: Network, objective: Objective, param: Parameterization | None = None, steps: int | None = None,
              key: jax.Array | None = None, *, method: Method | None = None, aux_params: Any = None,
              target: Any = None, z0: jax.Array | None = None,
              on_step: Callable[[int], None] | None = None) -> Result:
    """One optimization of ``objective`` on ``net``, unscored (``jaxviz.visualize`` scores it).

    Without ``param`` the pixels themselves are optimized; without ``method``, plain gradient ascent
    (lr 1, 200 steps). ``aux_params`` are the parameterization's weights (a generator's), ``target`` the
    unit index or reference features an objective built without one reads, ``z0`` a starting variable;
    ``on_step(n)`` hears of progress (``CompiledRun``).
    """
    key = jax.random.key(0) if key is None else key
    return _run(net, objective, param, method, steps, aux_params, target, key, z0, batched=False, on_step=on_step)


def optimize_batch(net: Network, objective: Objective, param: Parameterization | None = None,
                    steps: int | None = None, keys: jax.Array | None = None, targets: Any = None, *,
                    method: Method | None = None, aux_params: Any = None, z0: jax.Array | None = None,
                    on_step: Callable[[int], None] | None = None) -> Result:
    """Many runs in one compiled program: ``keys`` (and ``targets``, ``z0``) carry a leading run axis.

    Targets are traced, so one compilation serves every unit of a layer; each run equals the single
    ``visualize`` call with the same key and target.
    """
    if keys is None:
        n = len(np.atleast_1d(targets)) if targets is not None else 1
        keys = jax.random.split(jax.random.key(0), n)
    return _run(net, objective, param, method, steps, aux_params, targets, keys, z0, batched=True, on_step=on_step)


def _run(net: Network, objective: Objective, param: Parameterization | None, method: Method | None,
         steps: int | None, aux_params: Any, targets: Any, keys: jax.Array, z0: jax.Array | None, *,
         batched: bool, on_step: Callable[[int], None] | None = None) -> Result:
    """Check, compile (or reuse), run, and warn about runs stopped by NaN/Inf."""
    param = _default_param(net) if param is None else param
    method = _method(method, steps)
    check_setup(net, objective, param, aux_params, targets)
    run = compiled_run(net.function, objective, param, method, batched, z0 is not None)
    result = run(net.params, aux_params, targets, keys, *(() if z0 is None else (z0,)), on_step=on_step)
    _report_failures(result)
    return result


def unit_keys(seed: int, units: Sequence[int], seeds_per_unit: int = 1) -> tuple[jax.Array, jax.Array]:
    """(targets, keys) for every (unit, seed) pair; a run's key depends only on its unit and seed index."""
    units = np.repeat(np.asarray(units, np.int32), seeds_per_unit)
    seeds = np.tile(np.arange(seeds_per_unit, dtype=np.uint32), len(units) // max(seeds_per_unit, 1))
    base = jax.random.key(seed)
    keys = jax.vmap(lambda u, s: jax.random.fold_in(jax.random.fold_in(base, u), s))(units, seeds)
    return jnp.asarray(units), keys


__all__ = ["Network", "OptimizationFailed", "check_setup", "optimize", "optimize_batch", "unit_keys"]
