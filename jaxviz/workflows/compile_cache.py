"""JAX's persistent compilation cache for jaxviz's command line: a rerun reads the programs compiled before.

Compilation dominates short jobs on a CPU (several seconds per program, against well under a second per
step), and every ``jaxviz`` command compiles the same few programs again. The command line therefore keeps
them in a cache folder: ``$JAXVIZ_COMPILATION_CACHE``, else ``$XDG_CACHE_HOME/jaxviz/xla``, else
``~/.cache/jaxviz/xla``; ``JAXVIZ_COMPILATION_CACHE=off`` turns it off. A library user calls
``enable_compilation_cache()`` once, or sets JAX's own ``jax_compilation_cache_dir``, which this respects.
"""

from __future__ import annotations

import os
import pathlib
import warnings

import jax

CACHE_ENV = "JAXVIZ_COMPILATION_CACHE"
OFF = ("", "0", "off", "no", "false", "none")
# Programs quicker to compile than this are not worth a file each (JAX's own default is 1 s).
MIN_COMPILE_SECONDS = 0.2


def default_cache_dir() -> pathlib.Path | None:
    """The cache folder the environment names (see the module docstring); None when it is turned off."""
    named = os.environ.get(CACHE_ENV)
    if named is not None:
        return None if named.strip().lower() in OFF else pathlib.Path(named).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "jaxviz" / "xla"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache in ``path`` (default: ``default_cache_dir()``).

    Returns the folder in use, or None when the cache is off or its folder cannot be made (a warning says
    so; the job runs anyway, compiling as usual). A folder already set in JAX's config is kept.
    """
    current = jax.config.jax_compilation_cache_dir
    if current:
        return pathlib.Path(current)
    folder = pathlib.Path(path) if path is not None else default_cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"not writable: {folder}")
    except OSError as err:
        warnings.warn(f"compilation cache off: cannot use {folder} ({err.strerror or err}); set "
                      f"{CACHE_ENV} to another folder, or to 'off'")
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return folder


__all__ = ["CACHE_ENV", "default_cache_dir", "enable_compilation_cache"]
