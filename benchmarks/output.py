"""Where the benchmarks write: each file whole (atomically), and never over an earlier one."""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any, Sequence

from jaxviz.io.atomic import atomic_write_bytes


def refuse_existing(parser: argparse.ArgumentParser, paths: Sequence[str | pathlib.Path], flag: str) -> None:
    """Stop with a one-line error, before any timing, when one of ``paths`` exists (earlier figures are kept)."""
    existing = [str(p) for p in paths if p and pathlib.Path(p).exists()]
    if existing:
        parser.error(f"{', '.join(existing)} already exist(s): pass another {flag} or remove them")


def write_json(path: str | pathlib.Path, data: Any, indent: int = 1) -> None:
    """``data`` as JSON at ``path``, written whole."""
    atomic_write_bytes(path, json.dumps(data, indent=indent).encode())
