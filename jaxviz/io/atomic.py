"""Files and folders that are either absent or whole: every output of jaxviz is written through here.

A write goes to a temporary file in the target's folder, is flushed to disk, then renamed over the
target (``os.replace`` is atomic on POSIX): a reader, or a run resumed after a crash or SIGKILL, sees the
old file or the new one, never a part. A folder (a converted model, an inverse set) is built whole in a
temporary sibling and moved into place by ``replace_dir``; the old folder is removed only after the new
one is in place.

Temporary names carry their writer, ``.NAME.tmp-PID@HOST``, so that a later run can tell the leftovers of
a killed process (same host, pid no longer running) from the files of a live one, and remove only the
former (``clean_stale``); a writer on another host is never second-guessed.
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import pathlib
import re
import shutil
import socket
import time
from typing import Mapping

import numpy as np

TMP_MARK = ".tmp-"
OLD_MARK = ".old-"
# A leftover of another host is removed only when older than this (no write takes a day).
FOREIGN_STALE_SECONDS = 24 * 3600
_TAG = re.compile(r"^\.(?P<name>.+)(?P<mark>\.tmp-|\.old-)(?P<pid>\d+)@(?P<host>[A-Za-z0-9._-]*)$")


def host_name() -> str:
    """This machine's name as it appears in temporary and claim files (letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64] or "localhost"


def owner_tag() -> str:
    """``PID@HOST`` of this process."""
    return f"{os.getpid()}@{host_name()}"


def process_start(pid: int) -> int | None:
    """The start time of a process (clock ticks since boot, from /proc), None where unknown."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether process ``pid`` of this host runs (and, given ``start``, is the same process, not a reuse)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        pass
    except OSError:
        return False
    if start is not None:
        now = process_start(pid)
        if now is not None and now != start:
            return False
    return True


def tmp_path(path: str | os.PathLike, mark: str = TMP_MARK) -> pathlib.Path:
    """The temporary sibling of ``path`` owned by this process: ``.NAME.tmp-PID@HOST``."""
    path = pathlib.Path(path)
    return path.with_name(f".{path.name}{mark}{owner_tag()}")


def _fsync_dir(folder: pathlib.Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees either nothing or the whole file, even after a crash."""
    path = pathlib.Path(path)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _rename_exchange(a: pathlib.Path, b: pathlib.Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the complete folder ``new`` to ``target``, replacing what is there only once ``new`` is in place.

    With no ``target`` it is one rename. Over an existing folder it is one atomic swap where the system
    has one (Linux ``RENAME_EXCHANGE``); elsewhere the old folder is first renamed aside
    (``.NAME.old-PID@HOST``, restored by ``clean_stale`` if the process dies there) and removed after
    the new one is in place. Either way the old folder's contents are never deleted before the new
    folder is whole at ``target``.
    """
    new, target = pathlib.Path(new), pathlib.Path(target)
    if not target.exists() and not target.is_symlink():
        os.rename(new, target)
        _fsync_dir(target.parent)
        return
    if target.is_dir() and not target.is_symlink() and _rename_exchange(new, target):
        _fsync_dir(target.parent)
        shutil.rmtree(new, ignore_errors=True)  # now holds the old folder
        return
    aside = tmp_path(target, OLD_MARK)
    os.rename(target, aside)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(aside, target)
        raise
    _fsync_dir(target.parent)
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def is_stale(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a temporary left by a dead writer: this host and its pid gone, or a day old."""
    path = pathlib.Path(path)
    m = _TAG.match(path.name)
    if not m:
        return False
    if m["host"] == host_name():
        return not pid_alive(int(m["pid"]))
    try:
        return time.time() - path.lstat().st_mtime > FOREIGN_STALE_SECONDS
    except OSError:
        return False


def clean_stale(folder: str | os.PathLike) -> list[pathlib.Path]:
    """Remove the stale temporaries directly in ``folder`` (see ``is_stale``); returns what was removed.

    A stale ``.NAME.old-...`` (a folder renamed aside by ``replace_dir`` whose process died before the
    new one arrived) is renamed back to ``NAME`` when ``NAME`` is missing, never deleted.
    """
    folder = pathlib.Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TAG.match(entry.name)
        if not m or not is_stale(entry):
            continue
        original = folder / m["name"]
        try:
            if m["mark"] == OLD_MARK and not original.exists():
                os.rename(entry, original)
                continue
            _remove(entry)
            removed.append(entry)
        except OSError:
            continue
    return removed


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


__all__ = ["atomic_write_bytes", "npz_bytes", "npy_bytes", "TMP_MARK", "OLD_MARK", "tmp_path", "replace_dir",
           "clean_stale", "is_stale", "pid_alive", "process_start", "host_name", "owner_tag"]
