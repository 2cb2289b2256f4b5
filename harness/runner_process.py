"""Spawn the runner as APISIX does (``kafkaupstream run`` with its two env vars) and stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType


class RunnerProcess:
    """The real runner process on a temporary socket path; stderr captured to a file."""

    def __init__(
        self,
        *,
        socket_path: str | None = None,
        conf_expire: str = "3600",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_path: str | None = None,
        workers: int | None = None,
    ) -> None:
        """``workers`` adds ``--workers N``; None leaves the runner's default (its usable CPUs)."""
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if socket_path is None:
            # Short path: unix socket paths are limited to ~107 bytes.
            self._tmpdir = tempfile.TemporaryDirectory(prefix="ku-")
            socket_path = os.path.join(self._tmpdir.name, "runner.sock")
        self.socket_path = socket_path
        self.log_path = log_path or os.path.join(
            self._tmpdir.name if self._tmpdir else tempfile.gettempdir(),
            f"runner-{os.getpid()}-{id(self)}.log",
        )
        self.conf_expire = conf_expire
        self.args = list(args)
        if workers is not None:
            self.args += ["--workers", str(workers)]
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 15.0) -> RunnerProcess:
        env = {
            **os.environ,
            **self.extra_env,
            "APISIX_LISTEN_ADDRESS": f"unix:{self.socket_path}",
            "APISIX_CONF_EXPIRE_TIME": self.conf_expire,
            "PYTHONUNBUFFERED": "1",
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kafkaupstream", "run", *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop(signal.SIGKILL, timeout=5)  # never leave a half-started runner behind
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Until this process logged that it listens and the socket accepts connections.

        Both, because on a reload the path may still belong to the previous runner.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"runner exited with {self.proc.returncode}:\n{self.logs()}")
            if "event=listening" in self.logs():
                try:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                        probe.connect(self.socket_path)
                    return
                except OSError:
                    pass
            time.sleep(0.02)
        raise TimeoutError(f"runner not listening after {timeout}s:\n{self.logs()}")

    def worker_pids(self) -> list[int]:
        """The runner's child processes (its workers), from /proc; empty with ``--workers 1``."""
        assert self.proc is not None
        return child_pids(self.proc.pid)

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Signal the runner and wait; SIGKILL after ``timeout`` (like APISIX, but patient)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def logs(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        self.stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()

    def __enter__(self) -> RunnerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def child_pids(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``, scanned from /proc (Linux)."""
    children: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat_line = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        fields = stat_line[stat_line.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            children.append(int(entry))
    return sorted(children)
