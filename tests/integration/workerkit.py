"""Steering which worker of a multi-worker runner serves the next connection (Linux /proc)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.runner_process import RunnerProcess


def process_state(pid: int) -> str:
    """The state letter in /proc/<pid>/stat ("" when the process is gone)."""
    try:
        line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return line[line.rindex(")") + 2]


def wait_until(
    predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` every 10 ms; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def only_running(proc: RunnerProcess, pid: int) -> Iterator[None]:
    """Every other worker stopped (SIGSTOP), so only ``pid`` can accept new connections."""
    others = [p for p in proc.worker_pids() if p != pid]
    for other in others:
        os.kill(other, signal.SIGSTOP)
    try:
        for other in others:
            wait_until(lambda p=other: process_state(p) in ("T", "t"), what=f"{other} stopped")
        yield
    finally:
        for other in others:
            os.kill(other, signal.SIGCONT)
