"""Files that are either absent or whole: every output of jaxviz is written through here.

A write goes to a temporary file in the target's folder, is flushed to disk, then renamed over the
target (``os.replace`` is atomic on POSIX): a reader, or a run resumed after a crash or SIGKILL, sees the
old file or the new one, never a part.
"""

from __future__ import annotations

import io
import os
import pathlib
from typing import Mapping

import numpy as np

TMP_MARK = ".tmp-"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees either nothing or the whole file, even after a crash."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Arrays as the bytes of an uncompressed ``.npz`` file."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """One array as the bytes of a ``.npy`` file."""
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


__all__ = ["atomic_write_bytes", "npz_bytes", "npy_bytes", "TMP_MARK"]
