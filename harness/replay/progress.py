"""A one-line progress bar on a terminal, rewritten in place (``\\r`` + erase line, like load's)."""

from __future__ import annotations

import time
from typing import TextIO


class ProgressBar:
    """``[######......]  12/30  2 differ  41 req/s``; silent when ``out`` is None."""

    def __init__(self, out: TextIO | None, total: int, *, width: int = 30, interval_s: float = 0.1):
        self._out = out
        self._total = max(total, 1)
        self._width = width
        self._interval_s = interval_s
        self._started = time.monotonic()
        self._last = 0.0

    def update(self, done: int, differing: int, *, force: bool = False) -> None:
        if self._out is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self._interval_s:
            return
        self._last = now
        filled = int(self._width * min(done, self._total) / self._total)
        rate = done / (now - self._started) if now > self._started else 0.0
        self._out.write(
            f"\r\x1b[2K[{'#' * filled}{'.' * (self._width - filled)}] {done:>5}/{self._total}"
            f"  {differing} differ  {rate:,.0f} req/s"
        )
        self._out.flush()

    def close(self) -> None:
        if self._out is not None:
            self._out.write("\r\x1b[2K")
            self._out.flush()
