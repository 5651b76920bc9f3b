"""Signs of life for long jobs: a progress line with rate and ETA."""

from __future__ import annotations

import os
import sys
import time
from typing import Any


class Progress:
    """A one-line progress bar with units/s and ETA on a terminal; silent when not a TTY or under CI."""

    def __init__(self, total: int, done: int = 0, stream: Any = None, enabled: bool | None = None):
        self.stream = sys.stderr if stream is None else stream
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = (tty and not os.environ.get("CI")) if enabled is None else enabled
        self.total, self.done, self.start_done, self.t0 = total, done, done, time.perf_counter()

    def update(self, n: int) -> None:
        """Count ``n`` more finished runs and redraw."""
        self.done += n
        if not self.enabled:
            return
        rate = (self.done - self.start_done) / max(time.perf_counter() - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        width = 30
        bar = "#" * int(width * self.done / max(self.total, 1))
        self.stream.write(f"\r[{bar:<{width}}] {self.done}/{self.total} units  {rate:.2f} units/s  "
                          f"ETA {eta:5.0f} s ")
        self.stream.flush()

    def close(self) -> None:
        """End the line."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


__all__ = ["Progress"]
