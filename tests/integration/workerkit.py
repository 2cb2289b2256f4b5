"""Steering which worker of a multi-worker runner serves the next connection (Linux /proc)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from harness.runner_process import RunnerProcess
from tests.waiting import eventually


def process_state(pid: int) -> str:
    """The state letter in /proc/<pid>/stat ("" when the process is gone)."""
    try:
        line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return line[line.rindex(")") + 2]


@contextlib.contextmanager
def only_running(proc: RunnerProcess, pid: int) -> Iterator[None]:
    """Every other worker stopped (SIGSTOP), so only ``pid`` can accept new connections."""
    others = [p for p in proc.worker_pids() if p != pid]
    for other in others:
        os.kill(other, signal.SIGSTOP)
    try:
        for other in others:
            eventually(
                lambda p=other: process_state(p) in ("T", "t"),
                timeout=5.0,
                what=f"{other} stopped",
                interval=0.01,
            )
        yield
    finally:
        for other in others:
            os.kill(other, signal.SIGCONT)
