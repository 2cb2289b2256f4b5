"""Waiting for a condition a process reaches on its own (a scrape, a log line, a /proc state)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T], timeout: float = 8.0, what: str = "condition", interval: float = 0.05
) -> T:
    """``check()``'s first truthy result, tried every ``interval`` s.

    A check may also assert: its AssertionError counts as "not yet", and the last one is chained
    to the timeout's AssertionError, which names ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
            error: AssertionError | None = None
        except AssertionError as exc:
            error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}") from error
        time.sleep(interval)
