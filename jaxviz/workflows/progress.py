"""Signs of life for long jobs: one progress bar per stage on a terminal, one line per stage elsewhere.

A stage is a named piece of work with a known size ("sweep fc6 dgn_am, chunk 2/9: steps"). On a
terminal it draws a ``tqdm`` bar that moves with every step; when the output is a pipe or a log file
(or under CI) it prints one line when the stage ends, with its count and time, so a log shows life
without a thousand carriage returns; a stage that runs longer than ``HEARTBEAT`` seconds also prints a
line with its count every ``HEARTBEAT`` seconds, so a long chunk is not silent.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

HEARTBEAT = 30.0  # seconds between the lines of a long stage when the output is not a terminal


def interactive(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal a bar can redraw (and not a CI log)."""
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("CI")


class Stage:
    """Progress of one stage: ``update(n)`` as work is done, ``close()`` (or a ``with`` block) at the end.

    ``mode``: "bar" (tqdm), "lines" (one line at the end), "off"; None picks "bar" on a terminal and
    "lines" otherwise.
    """

    def __init__(self, name: str, total: int, unit: str = "step", *, stream: TextIO | None = None,
                 mode: str | None = None, initial: int = 0):
        self.stream = sys.stderr if stream is None else stream
        self.mode = mode or ("bar" if interactive(self.stream) else "lines")
        if self.mode not in ("bar", "lines", "off"):
            raise ValueError(f"progress mode must be 'bar', 'lines' or 'off', got {self.mode!r}")
        self.name, self.total, self.unit, self.done = name, int(total), unit, int(initial)
        self.t0 = self._last = time.perf_counter()
        self._bar = (tqdm(total=self.total, initial=self.done, desc=name, unit=unit or "it", file=self.stream,
                          dynamic_ncols=True, leave=True) if self.mode == "bar" else None)
        self._closed = False

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units of work."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines" and time.perf_counter() - self._last >= HEARTBEAT and self.done < self.total:
            self._last = time.perf_counter()
            self.stream.write(f"{self.name}: {self._count()} so far, {self._last - self.t0:.0f} s\n")
            self.stream.flush()

    def close(self, note: str = "") -> None:
        """End the stage (the line of a non-terminal run is printed here)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note)
            self._bar.close()
        elif self.mode == "lines":
            seconds = time.perf_counter() - self.t0
            self.stream.write(f"{self.name}: {self._count()} in {seconds:.1f} s"
                              + (f"; {note}" if note else "") + "\n")
            self.stream.flush()

    def _count(self) -> str:
        return f"{self.done}/{self.total}" + (f" {self.unit}s" if self.unit else "")

    def __enter__(self) -> "Stage":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Stages:
    """A ``(stage, done, total)`` callback that keeps one ``Stage`` per stage name, closing each as the next begins."""

    def __init__(self, prefix: str = "", unit: str = "step", mode: str | None = None, stream: TextIO | None = None):
        self.prefix, self.unit, self.mode, self.stream = prefix, unit, mode, stream
        self._name: str | None = None
        self._stage: Stage | None = None

    def __call__(self, name: str, done: int, total: int) -> None:
        if name != self._name:
            self.close()
            self._name = name
            self._stage = Stage(f"{self.prefix}{name}", total, self.unit, stream=self.stream, mode=self.mode)
        if self._stage is not None and done > self._stage.done:
            self._stage.update(done - self._stage.done)

    def close(self) -> None:
        """End the current stage."""
        if self._stage is not None:
            self._stage.close()
            self._stage = None

    def __enter__(self) -> "Stages":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def mode_for(progress: bool | None) -> str | None:
    """A ``--progress/--no-progress`` flag as a stage mode: None (automatic), "bar" or "off"."""
    return None if progress is None else ("bar" if progress else "off")


__all__ = ["HEARTBEAT", "Stage", "Stages", "interactive", "mode_for"]
