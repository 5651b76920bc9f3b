"""The run-folder protocol: a manifest that names the job, files committed one by one, resume or refuse.

A folder holds one job. Its ``manifest.json`` says what the job computes; a rerun with the same job
resumes it (every committed file is kept), a different job is refused, and a non-empty folder with no
manifest is refused rather than mixed into. Files are committed with ``jaxviz.io.atomic``: a chunk
file that exists is complete.

Chunk files verify themselves: each ``chunks/chunk_NNNNN.npz`` carries a ``_meta`` entry with the job's
id (a hash of its manifest), the chunk's index and a sha256 per array and per unit PNG written with it.
A chunk that does not read back whole, or belongs to another job or index, is named, moved aside
(``.damaged``) and computed again; a file that is not one of the job's chunk indices is never read.

Processes share a folder by claiming a chunk before computing it: ``chunks/chunk_NNNNN.claim`` is
created with ``O_CREAT | O_EXCL`` and holds the owner's pid, host and process start time; while the
owner computes, a daemon thread touches the claim every ``CLAIM_HEARTBEAT_SECONDS``. Another process
skips a chunk whose claim is live and takes over a claim whose process is gone: on the same host, a pid
that no longer runs; from another host (whose processes cannot be asked), a claim not touched for
``CLAIM_STALE_SECONDS``. So two identical sweeps started on one folder split the chunks between them,
and a killed one (on any host) leaves nothing that blocks a rerun for long. Temporary files of dead
processes are removed on resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import re
import threading
import time
import warnings
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from jaxviz.io.atomic import (atomic_write_bytes, clean_stale, host_name, npz_bytes,
                              pid_alive, process_start)

MANIFEST = "manifest.json"
CHUNKS = "chunks"
UNITS_DIR = "units"
RESULTS = "results.jsonl"
METADATA = "metadata.json"
CHUNK_META = "_meta"
DAMAGED_MARK = ".damaged"
MAX_MESSAGE = 600  # characters of a foreign text (an error, a file's content) quoted in a message


class SweepError(Exception):
    """A run folder that cannot start or go on: a foreign output folder, an unwritable or full disk."""


RunFolderError = SweepError


class DamagedFileWarning(UserWarning):
    """A committed file of a run folder did not verify and is being recomputed."""


def shorten(text: Any, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to about ``limit`` characters (head and tail kept), saying how long it was."""
    text = str(text)
    if len(text) <= limit:
        return text
    head = max(limit - 120, 20)
    return f"{text[:head]} [... {len(text) - head - 80} more characters ...] {text[-80:]}"


def chunk_path(out: pathlib.Path, index: int) -> pathlib.Path:
    """The file of chunk ``index``."""
    return pathlib.Path(out) / CHUNKS / f"chunk_{index:05d}.npz"


def claim_path(out: pathlib.Path, index: int) -> pathlib.Path:
    """The claim file of chunk ``index`` (present while a process computes it)."""
    return pathlib.Path(out) / CHUNKS / f"chunk_{index:05d}.claim"


def write_or_explain(what: str, fn: Callable[[], Any], out: pathlib.Path) -> Any:
    try:
        return fn()
    except OSError as err:
        raise SweepError(f"cannot write {what} in {out}: {err.strerror or shorten(err)}. Every chunk finished "
                         f"before this one is kept; free space or fix the folder's permissions and run the "
                         f"same sweep again to resume") from err


# ----- the folder and its manifest ---------------------------------------------------------------------------

def read_manifest(path: pathlib.Path) -> dict:
    """A folder's manifest; a damaged one is a ``SweepError`` naming the file."""
    try:
        manifest = json.loads(path.read_text())
    except OSError as err:
        raise SweepError(f"cannot read {path}: {err.strerror or err}") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise SweepError(f"{path} is damaged ({shorten(err, 200)}); the folder cannot be resumed: delete "
                         f"it (or use another --out) to start over") from None
    if not isinstance(manifest, dict):
        raise SweepError(f"{path} is damaged (not a JSON object); delete the folder to start over")
    chunk = manifest.get("chunk_size", 1)
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise SweepError(f"{path} records chunk size {shorten(chunk, 40)!s}, which is not a positive "
                         f"integer; the folder cannot be resumed: delete it to start over")
    return manifest


def _entries(out: pathlib.Path) -> list[pathlib.Path]:
    try:
        return [p for p in out.iterdir() if p.name != ".gitkeep"]
    except OSError as err:
        raise SweepError(f"cannot read the folder {out}: {err.strerror or err}") from None


def open_job_folder(out: pathlib.Path, manifest: dict, kind: str = "sweep",
                    adopt: Iterable[str] = ()) -> dict:
    """Create or reopen the folder of a job; refuses one holding another job. Returns the manifest in force.

    A folder that exists and holds the same job (every manifest field but ``chunk_size`` equal) is
    resumed; one whose manifest differs, or that is not empty and has no manifest, is refused, unless
    every entry in it is named in ``adopt`` (an output of the same kind written before manifests
    existed), in which case the manifest is added. Stale temporaries of dead processes are removed.
    """
    out = pathlib.Path(out)
    path = out / MANIFEST
    if out.exists() and not out.is_dir():
        raise SweepError(f"{out} is a file, not a folder; choose another --out for the {kind}")
    # Processes started together on a new folder: one may be writing the manifest right now. Wait for it
    # rather than mistake its temporary file for someone else's data.
    deadline = time.time() + MANIFEST_WAIT_SECONDS
    while not path.exists() and _manifest_being_written(out, path) and time.time() < deadline:
        time.sleep(0.05)
    if path.exists():
        old = read_manifest(path)
        mine = {k: manifest[k] for k in manifest if k != "chunk_size"}
        theirs = {k: old.get(k) for k in mine}
        if mine != theirs:
            diff = ", ".join(f"{k}: {shorten(theirs[k], 60)} there vs {shorten(mine[k], 60)} asked"
                             if k != "units" else "units differ" for k in mine if mine[k] != theirs[k])
            raise SweepError(f"{out} holds the results of a different {kind} ({diff}); refusing to mix them. "
                             f"Use another --out folder, or delete that one to start over")
        clean_stale(out)
        return old
    if out.exists():
        clean_stale(out)
        entries = _entries(out)
        foreign = [p.name for p in entries if p.name not in set(adopt)]
        if foreign:
            shown = ", ".join(sorted(foreign)[:5]) + (", ..." if len(foreign) > 5 else "")
            raise SweepError(f"{out} is not empty and holds no {kind} manifest ({shown}); refusing to write a "
                             f"{kind} into it. Use another --out folder")
    write_or_explain(f"the {kind} manifest", lambda: _create(out, path, manifest), out)
    return json.loads(json.dumps(manifest))  # as a resumed run reads it back


MANIFEST_WAIT_SECONDS = 30.0


def _manifest_being_written(out: pathlib.Path, path: pathlib.Path) -> bool:
    """Whether ``out`` holds nothing but temporary files of its manifest (another process creating it)."""
    try:
        entries = list(out.iterdir())
    except OSError:
        return False
    return bool(entries) and all(e.name.startswith(f".{path.name}.tmp-") for e in entries)


def _create(out: pathlib.Path, path: pathlib.Path, manifest: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(manifest, indent=1).encode())


def open_output(out: pathlib.Path, manifest: dict) -> dict:
    """Create or reopen a sweep folder; refuses one holding another sweep. Returns the manifest in force."""
    out = pathlib.Path(out)
    found = open_job_folder(out, manifest, "sweep")

    def subfolders() -> None:
        for sub in (CHUNKS, UNITS_DIR):
            (out / sub).mkdir(exist_ok=True)
            clean_stale(out / sub)
        clean_stale_claims(out)
    write_or_explain("the sweep folders", subfolders, out)
    return found


def job_id(manifest: dict) -> str:
    """A short hash of everything a manifest records: chunks of one job carry it."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:32]


# ----- chunk files that verify themselves ---------------------------------------------------------------------

def array_sha256(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and C-order bytes."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def chunk_bytes(arrays: dict[str, np.ndarray], job: str, index: int,
                files: dict[str, str] | None = None) -> bytes:
    """The ``.npz`` bytes of a chunk: its arrays plus ``_meta`` (job, index, sha256 of arrays and files)."""
    meta = {"job": job, "chunk": index, "arrays": {k: array_sha256(np.asarray(v)) for k, v in arrays.items()},
            "files": dict(files or {})}
    return npz_bytes({**arrays, CHUNK_META: np.frombuffer(json.dumps(meta).encode(), np.uint8)})


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclasses.dataclass
class Chunk:
    """A chunk file read back and verified: its arrays and the sha256 of the unit files written with it."""

    arrays: dict[str, np.ndarray]
    files: dict[str, str]


def read_chunk(path: pathlib.Path, job: str | None = None, index: int | None = None,
               units: np.ndarray | None = None, seeds: np.ndarray | None = None) -> Chunk:
    """Read and verify one chunk file; ``SweepError`` naming the file and what is wrong otherwise.

    Checks that the file reads back whole (zip CRCs), that every array matches the sha256 recorded
    when it was committed, that it belongs to ``job`` and ``index``, and that it holds ``units`` and
    ``seeds`` (the runs of that index). Files written before checksums existed are checked for the
    runs they hold.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise SweepError(f"{path} is missing") from None
    except Exception as err:  # BadZipFile, EOFError, CRC errors, a truncated .npy header, ...
        raise SweepError(f"{path} is damaged: {type(err).__name__}: {shorten(err, 200)}") from None
    meta_raw = arrays.pop(CHUNK_META, None)
    files: dict[str, str] = {}
    if meta_raw is not None:
        try:
            meta = json.loads(bytes(meta_raw).decode())
            recorded, files = dict(meta["arrays"]), dict(meta.get("files", {}))
        except (ValueError, KeyError, TypeError):
            raise SweepError(f"{path} is damaged: its {CHUNK_META} record does not read") from None
        if job is not None and meta.get("job") != job:
            raise SweepError(f"{path} belongs to another job (a file copied from another folder?)")
        if index is not None and meta.get("chunk") != index:
            raise SweepError(f"{path} holds chunk {meta.get('chunk')}, not chunk {index}")
        if set(recorded) != set(arrays):
            raise SweepError(f"{path} is damaged: it holds arrays {sorted(arrays)}, not {sorted(recorded)}")
        for name, digest in recorded.items():
            if array_sha256(arrays[name]) != digest:
                raise SweepError(f"{path} is damaged: array {name!r} does not match its checksum")
    for name, want in (("unit", units), ("seed_index", seeds)):
        if want is not None and (name not in arrays or not np.array_equal(arrays[name], want)):
            raise SweepError(f"{path} does not hold the runs of its index (its {name!r} differ); it belongs "
                             f"to another sweep")
    return Chunk(arrays, files)


def set_aside(path: pathlib.Path, reason: str) -> pathlib.Path:
    """Rename a damaged committed file out of the way (kept for inspection); warns naming it."""
    aside = path.with_name(f"{path.name}{DAMAGED_MARK}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return aside
    warnings.warn(f"{shorten(reason)}; moved it to {aside.name} and computing it again", DamagedFileWarning,
                  stacklevel=2)
    return aside


def pending_chunks(out: pathlib.Path, job: str, indices: Sequence[int],
                   runs_of: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> list[int]:
    """The chunk indices among ``indices`` that are not committed whole: damaged ones are set aside."""
    todo = []
    for c in indices:
        path = chunk_path(out, c)
        if not path.exists():
            todo.append(c)
            continue
        try:
            read_chunk(path, job, c, *runs_of(c))
        except SweepError as err:
            set_aside(path, str(err))
            todo.append(c)
    return todo


def load_chunk_files(out: pathlib.Path, n_chunks: int, job: str | None,
                     runs_of: Callable[[int], tuple[np.ndarray, np.ndarray]] | None) -> list[Chunk]:
    """Every committed chunk ``0..n_chunks-1`` of a folder, verified, in order (missing ones skipped)."""
    found = []
    for c in range(n_chunks):
        path = chunk_path(out, c)
        if not path.exists():
            continue
        try:
            found.append(read_chunk(path, job, c, *(runs_of(c) if runs_of else (None, None))))
        except SweepError as err:
            raise SweepError(f"{err}; run the same sweep again to compute that chunk anew") from None
    return found


_CHUNK_NAME = re.compile(r"^chunk_(\d{5,})\.npz$")


def warn_stray_chunks(out: pathlib.Path, n_chunks: int) -> list[pathlib.Path]:
    """Chunk files whose index is not one of the job's (never read); warns naming them."""
    stray = []
    try:
        names = sorted(p.name for p in (pathlib.Path(out) / CHUNKS).iterdir())
    except OSError:
        return stray
    for name in names:
        m = _CHUNK_NAME.match(name)
        if m and int(m[1]) >= n_chunks:
            stray.append(pathlib.Path(out) / CHUNKS / name)
    if stray:
        warnings.warn(f"ignoring {', '.join(p.name for p in stray[:5])} in {pathlib.Path(out) / CHUNKS}: not chunks "
                      f"of this sweep, which has {n_chunks} (chunk_00000 to chunk_{n_chunks - 1:05d})",
                      DamagedFileWarning, stacklevel=2)
    return stray


def unit_file_digests(out: pathlib.Path) -> dict[str, str]:
    """The sha256 of every unit file recorded in the folder's chunk files (those that read)."""
    found: dict[str, str] = {}
    try:
        paths = sorted((pathlib.Path(out) / CHUNKS).glob("chunk_*.npz"))
    except OSError:
        return found
    for path in paths:
        if not _CHUNK_NAME.match(path.name):
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                if CHUNK_META in z.files:
                    found.update(json.loads(bytes(z[CHUNK_META]).decode()).get("files", {}))
        except Exception:  # a damaged chunk: its files get checked by decoding instead
            continue
    return found


def read_json_or_empty(path: pathlib.Path) -> dict:
    """A JSON object file written by a job (rewritten by it), or {} when missing or damaged."""
    try:
        value = json.loads(pathlib.Path(path).read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_or_none(path: pathlib.Path) -> bytes | None:
    """A file's bytes, None when it is missing or unreadable."""
    try:
        return pathlib.Path(path).read_bytes()
    except OSError:
        return None


def png_is_whole(data: bytes) -> bool:
    """Whether ``data`` decodes as a complete PNG."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Exception:
        return False


def warn_damaged(path: pathlib.Path, reason: str) -> None:
    warnings.warn(f"{path} {reason}; writing it again from the committed chunk", DamagedFileWarning, stacklevel=2)


# ----- claims: processes sharing one folder -------------------------------------------------------------------

CLAIM_HEARTBEAT_SECONDS = 30.0
# Ten missed heartbeats: a process on another host that stopped touching its claim this long is gone (or
# stuck so badly that its chunk is better computed again; a late commit of the same chunk is harmless,
# chunk files are written atomically and equal).
CLAIM_STALE_SECONDS = 10 * CLAIM_HEARTBEAT_SECONDS

_held: set[pathlib.Path] = set()
_held_lock = threading.Lock()
_heartbeat: threading.Thread | None = None


def _touch_held_claims() -> None:
    while True:
        time.sleep(CLAIM_HEARTBEAT_SECONDS)
        with _held_lock:
            held = list(_held)
        for path in held:
            try:
                os.utime(path)
            except OSError:
                pass  # released meanwhile, or the folder went away: nothing to keep alive


def _hold(path: pathlib.Path) -> None:
    global _heartbeat
    with _held_lock:
        _held.add(path)
        if _heartbeat is None or not _heartbeat.is_alive():
            _heartbeat = threading.Thread(target=_touch_held_claims, name="jaxviz-claim-heartbeat", daemon=True)
            _heartbeat.start()


def _claim_record() -> dict:
    return {"pid": os.getpid(), "host": host_name(), "start": process_start(os.getpid()), "time": time.time()}


def _read_claim(path: pathlib.Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
        return record if isinstance(record, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written, or damaged: judged by its age


def claim_is_live(path: pathlib.Path, record: dict) -> bool:
    """Whether the process that wrote a claim may still be computing its chunk."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if record.get("host") == host_name() and isinstance(record.get("pid"), int):
        return pid_alive(record["pid"], record.get("start"))
    if not record:
        return age < 60  # an empty or unreadable claim: its writer gets a minute to finish it
    return age < CLAIM_STALE_SECONDS  # another host's process cannot be asked: its heartbeat must be recent


def describe_claim(path: pathlib.Path, record: dict | None) -> str:
    record = record or {}
    return f"pid {record.get('pid', '?')} on {record.get('host', '?')} ({path})"


def try_claim(path: pathlib.Path) -> str | None:
    """Claim a chunk: None when this process holds ``path`` now, else who holds it (a live owner)."""
    for _ in range(4):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            record = _read_claim(path)
            if record is None:
                continue  # released meanwhile
            if claim_is_live(path, record):
                return describe_claim(path, record)
            # Stale: only one process wins the rename; it then checks it moved the stale claim it read.
            grave = path.with_name(f"{path.name}.stale-{os.getpid()}")
            try:
                os.rename(path, grave)
            except FileNotFoundError:
                continue
            if _read_claim(grave) != record:  # someone took it over meanwhile: give theirs back
                try:
                    os.link(grave, path)
                except OSError:
                    pass
                grave.unlink(missing_ok=True)
                return describe_claim(path, _read_claim(path))
            grave.unlink(missing_ok=True)
            continue
        try:
            os.write(fd, json.dumps(_claim_record()).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        _hold(pathlib.Path(path))
        return None
    return describe_claim(path, _read_claim(path))


def clean_stale_claims(out: pathlib.Path) -> list[pathlib.Path]:
    """Remove the claims of processes that are gone (their chunks are computed again, or were finished)."""
    removed = []
    try:
        claims = sorted((pathlib.Path(out) / CHUNKS).glob("chunk_*.claim*"))
    except OSError:
        return removed
    for path in claims:
        if ".stale-" in path.name:  # a takeover interrupted between its rename and unlink
            pid = path.name.rsplit("-", 1)[1]
            if not (pid.isdigit() and pid_alive(int(pid))):
                path.unlink(missing_ok=True)
                removed.append(path)
            continue
        record = _read_claim(path)
        if record is not None and not claim_is_live(path, record):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def release_claim(path: pathlib.Path) -> None:
    """Give up a claim this process holds."""
    with _held_lock:
        _held.discard(pathlib.Path(path))
    record = _read_claim(path)
    if record and record.get("pid") == os.getpid() and record.get("host") == host_name():
        path.unlink(missing_ok=True)


__all__ = ["MANIFEST", "CHUNKS", "UNITS_DIR", "RESULTS", "METADATA", "SweepError", "RunFolderError",
           "DamagedFileWarning", "chunk_path", "claim_path", "write_or_explain", "open_output", "open_job_folder",
           "read_manifest", "job_id", "chunk_bytes", "read_chunk", "Chunk", "set_aside", "pending_chunks",
           "load_chunk_files", "clean_stale_claims", "warn_stray_chunks", "unit_file_digests", "read_or_none", "read_json_or_empty", "png_is_whole",
           "warn_damaged", "try_claim", "release_claim", "claim_is_live", "CLAIM_HEARTBEAT_SECONDS", "CLAIM_STALE_SECONDS", "array_sha256", "file_sha256",
           "shorten"]
