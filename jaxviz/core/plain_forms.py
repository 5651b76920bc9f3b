"""Layers in their plainest forms: a trace-time choice for programs that run once.

``models.layers`` computes several layers in forms chosen by shape for speed (per-phase deconvolutions,
per-group convolutions, im2col, parts of the batch, the max-pooling gradient through selects). Each adds
slices, pads and concatenations, which XLA:CPU compiles kernel by kernel: most of a step's compile time.
A program that runs once per run (a run's result, ``core.loop``) gains nothing from them, so it is traced
under ``plain_forms()``: every layer whose form is not asked for takes one XLA operation, the same sums up
to float rounding.
"""

from __future__ import annotations

import jax

# A jit-cache-sensitive context: a program traced in plain forms is never reused for the fast forms.
_PLAIN = jax.make_user_context(False)


def plain_forms():
    """Context manager: every layer traced inside takes its plainest form (one XLA operation)."""
    return _PLAIN(True)


def in_plain_forms() -> bool:
    """Whether layers are being traced in their plainest forms."""
    return bool(_PLAIN.value)
