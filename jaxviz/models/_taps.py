"""Collecting named intermediate values ("taps") from a forward pass, and stopping once all are in."""

from __future__ import annotations

from typing import Sequence

import jax


class AllTapsComputed(Exception):
    """Raised by ``TapRecorder`` when the last requested tap is recorded: the rest of the net is skipped."""


class TapRecorder:
    """Records requested taps; raising ``AllTapsComputed`` lets a module read top-down like its layer table
    while never tracing layers deeper than the deepest tap asked for."""

    def __init__(self, requested: Sequence[str], valid: Sequence[str], model: str):
        self.wanted = resolve_taps(requested, valid, model)
        self.values: dict[str, jax.Array] = {}

    def __call__(self, name: str, value: jax.Array) -> jax.Array:
        """Record ``value`` under ``name`` if requested; returns it unchanged so calls can be chained."""
        if name in self.wanted:
            self.values[name] = value
            if len(self.values) == len(self.wanted):
                raise AllTapsComputed
        return value


def resolve_taps(requested: Sequence[str], valid: Sequence[str], model: str) -> frozenset[str]:
    """The requested tap names as a set, after checking each one exists (ValueError listing valid names)."""
    if isinstance(requested, str):  # a lone "fc8" would otherwise be read as taps "f", "c", "8"
        requested = (requested,)
    if not requested:
        raise ValueError(f"{model}: no taps requested; valid taps: {', '.join(valid)}")
    known = set(valid)
    for name in requested:
        if name not in known:
            raise ValueError(f"{model}: unknown tap {name!r}; valid taps: {', '.join(valid)}")
    return frozenset(requested)
