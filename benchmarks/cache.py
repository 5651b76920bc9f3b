"""JAX's persistent compilation cache for benchmark reruns (a second run reads the compiled programs)."""

from __future__ import annotations

import os

import jax


def enable_compilation_cache(path: str) -> None:
    """Cache every compiled program under ``path`` (created if missing), however quick it was to compile."""
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
