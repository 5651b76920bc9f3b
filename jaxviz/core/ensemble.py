"""Several networks seen as one, so objectives on all of them optimize one image (torch-dreams' ``ModelBunch``).

``Ensemble({"a": model_a, "b": model_b})`` is a ``Network``: its ``function`` feeds the same batch to
every member and returns their taps prefixed with the member's name (``"a/fc8"``, ``"b/fc8"``), so the
objectives and their algebra work unchanged: ``O.unit("a/fc8", 3) + O.unit("b/fc8", 3)``. Only the
members an objective reads are run. Every member sees the same array, so they must share an input
shape (checked) and should share an input space (mean, scale, channel order: the caller's business).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax

SEPARATOR = "/"

NetFunction = Callable[[Any, jax.Array, Sequence[str]], Mapping[str, jax.Array]]


def split_tap(tap: str, names: Sequence[str]) -> tuple[str, str]:
    """``"a/conv3"`` -> ``("a", "conv3")``; a clear error for a tap that names no member."""
    name, sep, inner = tap.partition(SEPARATOR)
    if not sep or name not in names or not inner:
        raise ValueError(f"the ensemble has no tap {tap!r}: its taps are MEMBER/TAP with MEMBER one of "
                       f"{', '.join(names)} (e.g. '{names[0]}/fc8')")
    return name, inner


def ensemble_function(names: tuple[str, ...], functions: tuple[NetFunction, ...]) -> NetFunction:
    """The pure ``(params, x, taps) -> acts`` of the ensemble: each member runs once, on its own taps."""
    def function(params: Mapping[str, Any], x: jax.Array, taps: Sequence[str]) -> dict[str, jax.Array]:
        wanted: dict[str, list[str]] = {}
        for tap in taps:
            name, inner = split_tap(tap, names)
            wanted.setdefault(name, []).append(inner)
        acts: dict[str, jax.Array] = {}
        for name, fn in zip(names, functions):
            if name in wanted:
                out = fn(params[name], x, tuple(wanted[name]))
                acts.update({f"{name}{SEPARATOR}{t}": out[t] for t in wanted[name]})
        return acts
    return function


def check_members(networks: Mapping[str, Any]) -> tuple[int, ...]:
    """The members' common input shape, or a clear error naming the two that differ."""
    if not networks:
        raise ValueError("an ensemble needs at least one network")
    for name in networks:
        if not isinstance(name, str) or not name or SEPARATOR in name:
            raise ValueError(f"ensemble member name {name!r}: a non-empty string without {SEPARATOR!r}")
    shapes = {name: tuple(int(d) for d in net.input_shape) for name, net in networks.items()}
    first, shape = next(iter(shapes.items()))
    for name, other in shapes.items():
        if other != shape:
            raise ValueError(f"ensemble members take different input shapes: {first!r} takes {shape}, "
                             f"{name!r} takes {other}; every member sees the same image")
    return shape


class Ensemble:
    """A ``Network`` made of named networks that see the same input; taps are ``"NAME/TAP"``."""

    def __init__(self, networks: Mapping[str, Any]):
        self.input_shape = check_members(networks)
        self.names = tuple(networks)
        self.networks = dict(networks)
        self.params = {name: net.params for name, net in networks.items()}
        # Built once and closing over the members' functions only (never their weights), so equal
        # ensembles share one compilation (the loop keys compilations by the function's value).
        self.function = ensemble_function(self.names, tuple(net.function for net in networks.values()))

    @property
    def tap_names(self) -> tuple[str, ...]:
        """Every member's taps, prefixed (empty for a member that does not list its taps)."""
        return tuple(f"{name}{SEPARATOR}{t}" for name, net in self.networks.items()
                     for t in getattr(net, "tap_names", ()))

    def __call__(self, x: jax.Array, taps: Sequence[str]) -> dict[str, jax.Array]:
        return self.function(self.params, x, taps)

    def __repr__(self) -> str:
        return f"Ensemble({', '.join(self.names)}; input {self.input_shape})"


__all__ = ["SEPARATOR", "Ensemble", "ensemble_function", "check_members", "split_tap"]
