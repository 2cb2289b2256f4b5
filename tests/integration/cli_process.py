"""A ``kafkaupstream-harness`` command run as a user would: a subprocess, its lines watched."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from tests.integration.test_broker import alive

__all__ = ["HARNESS", "CommandProcess", "alive", "processes_mentioning"]

#: ``python -m harness.cli``: the same ``main`` the console script calls, from this interpreter.
HARNESS = (sys.executable, "-m", "harness.cli")


class CommandProcess:
    """Starts ``kafkaupstream-harness ARGS...``; stdout and stderr are collected line by line."""

    def __init__(self, *args: str, command: tuple[str, ...] = HARNESS) -> None:
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [*command, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
            for stream, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _collect(self, stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def output(self) -> str:
        return "stdout:\n" + "\n".join(self.stdout) + "\nstderr:\n" + "\n".join(self.stderr)

    def wait_for(self, pattern: str, *, timeout: float = 30.0, since: int = 0) -> re.Match[str]:
        """The first stdout line from index ``since`` on that matches ``pattern`` (re.search)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            scanned = since
            while True:
                for line in self.stdout[scanned:]:
                    found = regex.search(line)
                    if found:
                        return found
                scanned = max(scanned, len(self.stdout))
                ended = self.proc.poll() is not None and not self._readers[0].is_alive()
                remaining = deadline - time.monotonic()
                if ended or remaining <= 0:
                    why = f"exited with {self.proc.returncode}" if ended else f"{timeout}s passed"
                    raise AssertionError(f"no line matching {pattern!r} ({why});\n{self.output()}")
                self._changed.wait(min(remaining, 0.1))

    def wait(self, timeout: float) -> int:
        """The exit code; fails (and kills the process) when it has not exited in time."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"still running after {timeout}s;\n{self.output()}") from None
        for reader in self._readers:
            reader.join(5)
        return code

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line or environment contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in blob and alive(int(entry.name)):
            found.append(int(entry.name))
    return found
