"""The run-folder protocol: a manifest that names the job, files committed one by one, resume or refuse.

A folder holds one job. Its ``manifest.json`` says what the job computes; a rerun with the same job
resumes it (every committed file is kept), a different job is refused, and a non-empty folder with no
manifest is refused rather than mixed into. Files are committed with ``jaxviz.io.atomic``: a chunk
file that exists is complete.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable

from jaxviz.io.atomic import atomic_write_bytes

MANIFEST = "manifest.json"
CHUNKS = "chunks"
UNITS_DIR = "units"
RESULTS = "results.jsonl"
METADATA = "metadata.json"


class SweepError(Exception):
    """A run folder that cannot start or go on: a foreign output folder, an unwritable or full disk."""


def chunk_path(out: pathlib.Path, index: int) -> pathlib.Path:
    """The file of chunk ``index``."""
    return out / CHUNKS / f"chunk_{index:05d}.npz"


def write_or_explain(what: str, fn: Callable[[], Any], out: pathlib.Path) -> Any:
    try:
        return fn()
    except OSError as err:
        raise SweepError(f"cannot write {what} in {out}: {err.strerror or err}. Every chunk finished before "
                         f"this one is kept; free space or fix the folder's permissions and run the same "
                         f"sweep again to resume") from err


def open_output(out: pathlib.Path, manifest: dict) -> dict:
    """Create or reopen a sweep folder; refuses one holding another sweep. Returns the manifest in force."""
    path = out / MANIFEST
    if path.exists():
        old = json.loads(path.read_text())
        mine = {k: manifest[k] for k in manifest if k != "chunk_size"}
        theirs = {k: old.get(k) for k in mine}
        if mine != theirs:
            diff = ", ".join(f"{k}: {theirs[k]!r} there vs {mine[k]!r} asked" if k != "units" else "units differ"
                             for k in mine if mine[k] != theirs[k])
            raise SweepError(f"{out} holds the results of a different sweep ({diff}); refusing to mix them. "
                             f"Use another --out folder, or delete that one to start over")
        return old
    if out.exists() and any(p.name != ".gitkeep" for p in out.iterdir()):
        raise SweepError(f"{out} is not empty and holds no sweep manifest; refusing to write a sweep into it")

    def create() -> None:
        (out / CHUNKS).mkdir(parents=True, exist_ok=True)
        (out / UNITS_DIR).mkdir(exist_ok=True)
        atomic_write_bytes(path, json.dumps(manifest, indent=1).encode())
    write_or_explain("the sweep manifest", create, out)
    return manifest


__all__ = ["MANIFEST", "CHUNKS", "UNITS_DIR", "RESULTS", "METADATA", "SweepError", "chunk_path",
           "write_or_explain", "open_output"]
