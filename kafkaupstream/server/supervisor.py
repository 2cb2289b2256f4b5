"""The parent of a multi-worker runner: binds the socket, forks the workers, owns the tokens.

APISIX spawns this process and, on stop or reload, SIGTERMs it, waits 1 s and SIGKILLs it. So the
parent binds the one unix socket (unix sockets have no SO_REUSEPORT: every worker accepts on the
inherited listening fd with its own event loop), forks N workers, serves their token lookups
(``token_service.py``), restarts a worker that dies, and on SIGTERM/SIGINT/SIGHUP forwards the
signal, waits at most the shutdown budget (workers get a slightly smaller one, so they normally
finish first), SIGKILLs stragglers, unlinks the socket only if it is still ours and exits 0.

The parent is a plain ``poll`` loop with no threads and no asyncio: forking from it is safe, and
it never holds anything a worker must not inherit (no plugins, no producers). With
``--metrics-listen`` the same loop serves ``/metrics``, ``/health`` and ``/ready`` for the whole
runner (``observability/``): the workers write their counters and reports into a directory the
parent reads, so the parent still has no thread, and it tidies a dead worker's files when it
reaps it.

A worker whose event loop freezes (SIGSTOP, a hang in C code, a deadlock) would keep accepting
connections it never serves, and no exit would tell the parent. So each worker sends a heartbeat
on its channel every second; a worker silent for 3 s (or half the timeout, if shorter) counts
as not accepting (``/ready`` says 503), and one silent for ``worker_timeout_s``
(``--worker-timeout``, 10 s by default) is SIGKILLed, then reaped and restarted like any dead
worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from kafkaupstream.logs import log_event
from kafkaupstream.observability import MetricsSetup, RunnerStatus, WorkerState
from kafkaupstream.observability.endpoint import Endpoint
from kafkaupstream.observability.http import HttpServer
from kafkaupstream.server.app import (
    SHUTDOWN_SIGNALS,
    RunnerServer,
    ServerSettings,
    bind_unix_socket,
    socket_identity,
    unlink_if_ours,
)
from kafkaupstream.server.confs import ConfList, TokenStore
from kafkaupstream.server.token_service import ChannelHub, TokenService
from kafkaupstream.server.token_wire import WireError
from kafkaupstream.server.tokens import ConfTokenRegistry
from kafkaupstream.server.worker import WorkerSpec, describe_exit, fork_worker

log = logging.getLogger(__name__)

_SIGNALS = (*SHUTDOWN_SIGNALS, signal.SIGCHLD)
#: Kept back from a worker's shutdown budget so the parent can still reap it in its own.
_WORKER_RESERVE_S = 0.1
#: A worker that lived this long before dying is restarted at once; quicker deaths back off.
_STABLE_AFTER_S = 1.0
_FIRST_RESTART_DELAY_S = 0.1
#: APISIX itself waits 3 s before respawning a runner that died.
_MAX_RESTART_DELAY_S = 3.0
#: A worker whose heartbeat (one a second) is this late no longer counts as accepting (or half
#: the worker timeout, when that is shorter: /ready must say so before the worker is killed).
_UNRESPONSIVE_AFTER_S = 3.0
#: How often the parent looks at the heartbeats.
_HEARTBEAT_CHECK_S = 0.5


@dataclass(slots=True)
class _Worker:
    index: int
    pid: int
    started_at: float
    ready: bool = False
    #: SIGKILLed by the parent for a missing heartbeat (once is enough).
    killed: bool = False


def _ignore_signal(_signum: int, _frame: object) -> None:
    """The signal's number reaches the loop through the wake-up fd; nothing to do here."""


class Supervisor:
    """Runs the parent until every worker is gone after a shutdown signal (SIGTERM/INT/HUP)."""

    def __init__(
        self,
        settings: ServerSettings,
        workers: int,
        make_server: Callable[[ServerSettings, TokenStore], RunnerServer],
        *,
        metrics: MetricsSetup | None = None,
        worker_timeout_s: float = 10.0,
    ) -> None:
        if workers < 1:
            raise ValueError("a runner needs at least one worker")
        self._settings = settings
        self._count = workers
        self._make_server = make_server
        budget = settings.shutdown_timeout_s
        self._worker_settings = replace(
            settings, shutdown_timeout_s=budget - min(_WORKER_RESERVE_S, budget / 4)
        )
        self._selector = selectors.PollSelector()
        self._registry: ConfTokenRegistry[ConfList] = ConfTokenRegistry(settings.conf_expire_s)
        self._channels = ChannelHub(TokenService(self._registry), self._selector, self._on_ready)
        self._metrics = metrics
        self._worker_timeout_s = worker_timeout_s
        self._unresponsive_after_s = min(_UNRESPONSIVE_AFTER_S, worker_timeout_s / 2)
        self._http: HttpServer | None = None
        self._restarts = 0
        self._workers: dict[int, _Worker] = {}
        self._restart_at: dict[int, float] = {}
        self._quick_deaths: dict[int, int] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener: socket.socket | None = None
        self._identity: tuple[int, int] | None = None
        self._stop_started: float | None = None
        self._announced = False
        self._exit_code = 0
        self._pid = os.getpid()

    def run(self) -> int:
        path = self._settings.socket_path
        try:
            self._listener = bind_unix_socket(path)
        except OSError as exc:
            log_event(log, logging.ERROR, "cannot_listen", path=path, cause=str(exc))
            return 1
        self._identity = socket_identity(path)
        previous = self._install_signals()
        try:
            self._start_metrics()
            for index in range(self._count):
                self._spawn(index)
            self._loop()
        finally:
            if self._http is not None:
                self._http.close()
            self._restore_signals(previous)
            self._close_listener()
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()
        if self._stop_started is not None:
            elapsed_ms = int((time.monotonic() - self._stop_started) * 1000)
            log_event(log, logging.INFO, "stopped", elapsed_ms=elapsed_ms)
        return self._exit_code

    # --- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            timeout: float | None = None
            if self._stop_started is not None:
                if not self._workers:
                    return
                deadline = self._stop_started + self._settings.shutdown_timeout_s
                if now >= deadline:
                    self._kill_remaining()
                    return
                timeout = deadline - now
            else:
                for index, due in sorted(self._restart_at.items()):
                    if due <= now:
                        del self._restart_at[index]
                        self._spawn(index)
                self._kill_silent(now)
                timeout = _HEARTBEAT_CHECK_S
                if self._restart_at:
                    timeout = min(timeout, max(0.0, min(self._restart_at.values()) - now))
            if self._http is not None:
                http_due = self._http.timeout(now)
                if http_due is not None:
                    timeout = http_due if timeout is None else min(timeout, http_due)
            for key, events in self._selector.select(timeout):
                data = key.data
                if data is None:
                    self._drain_wakeups()
                elif isinstance(data, int):
                    self._serve_channel(data, events)
                else:  # the metrics listener or one of its connections
                    data(events)
            self._reap()
            self._channels.update_interest()
            if self._http is not None:
                self._http.tick(time.monotonic())

    def _drain_wakeups(self) -> None:
        try:
            data = self._wake_r.recv(256)
        except BlockingIOError:
            return
        for signum in data:
            if signum in SHUTDOWN_SIGNALS:
                self._begin_stop(signal.Signals(signum))

    def _begin_stop(self, sig: signal.Signals) -> None:
        if self._stop_started is not None:
            return
        self._stop_started = time.monotonic()
        log_event(
            log, logging.INFO, "shutdown_requested", signal=sig.name, workers=len(self._workers)
        )
        self._restart_at.clear()
        self._close_listener()
        for pid in self._workers:
            _signal_quietly(pid, sig)

    def _silent_for(self, worker: _Worker, now: float) -> float:
        """Seconds since the worker's channel last brought anything (its heartbeat, at least)."""
        return now - self._channels.heard_at.get(worker.pid, now)

    def _kill_silent(self, now: float) -> None:
        """SIGKILL ready workers whose heartbeat stopped; the reaper restarts them."""
        for worker in self._workers.values():
            silent_s = self._silent_for(worker, now)
            if worker.ready and not worker.killed and silent_s >= self._worker_timeout_s:
                worker.killed = True
                log_event(
                    log,
                    logging.ERROR,
                    "worker_unresponsive",
                    worker=worker.index,
                    pid=worker.pid,
                    silent_s=round(silent_s, 1),
                    action="kill_and_restart",
                )
                _signal_quietly(worker.pid, signal.SIGKILL)

    def _kill_remaining(self) -> None:
        log_event(log, logging.WARNING, "shutdown_killed_workers", count=len(self._workers))
        for pid in self._workers:
            _signal_quietly(pid, signal.SIGKILL)
        deadline = time.monotonic() + 0.2
        while self._workers and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.005)

    # --- workers ------------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        assert self._listener is not None
        parent_end, child_end = socket.socketpair()
        spec = WorkerSpec(
            index=index,
            settings=replace(self._worker_settings, worker_slot=index),
            listener=self._listener,
            channel=child_end,
            make_server=self._make_server,
            parent_pid=self._pid,
        )
        # What the child must not keep: every parent-side fd except the listening socket.
        inherited = [parent_end, self._wake_r, self._wake_w, *self._channels.sockets()]
        if self._http is not None:
            inherited += self._http.sockets()
        try:
            pid = fork_worker(spec, inherited, _SIGNALS)
        except OSError as exc:
            parent_end.close()
            log_event(log, logging.ERROR, "fork_failed", worker=index, cause=str(exc))
            self._restart_at[index] = time.monotonic() + _MAX_RESTART_DELAY_S
            return
        finally:
            child_end.close()
        self._workers[pid] = _Worker(index, pid, time.monotonic())
        self._channels.add(pid, parent_end)
        log_event(log, logging.INFO, "worker_started", worker=index, pid=pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self._workers.pop(pid, None)
            self._channels.remove(pid)
            if self._metrics is not None:
                self._metrics.directory.process_dead(pid)
            if worker is not None:
                self._on_exit(worker, describe_exit(os.waitstatus_to_exitcode(status)))

    def _on_exit(self, worker: _Worker, cause: str) -> None:
        if self._stop_started is not None:
            log_event(
                log, logging.INFO, "worker_exited", worker=worker.index, pid=worker.pid, cause=cause
            )
            return
        if not self._announced and not worker.ready:
            log_event(
                log,
                logging.ERROR,
                "worker_failed_to_start",
                worker=worker.index,
                pid=worker.pid,
                cause=cause,
                action="stop_runner",
            )
            self._exit_code = 1
            self._begin_stop(signal.SIGTERM)
            return
        now = time.monotonic()
        quick = 0
        if now - worker.started_at < _STABLE_AFTER_S:
            quick = self._quick_deaths.get(worker.index, 0) + 1
        self._quick_deaths[worker.index] = quick
        delay = 0.0
        if quick:
            delay = min(_MAX_RESTART_DELAY_S, _FIRST_RESTART_DELAY_S * 2 ** (quick - 1))
        self._restart_at[worker.index] = now + delay
        self._restarts += 1
        log_event(
            log,
            logging.WARNING,
            "worker_died",
            worker=worker.index,
            pid=worker.pid,
            cause=cause,
            action="restart",
            delay_s=round(delay, 1),
        )

    # --- channels ---------------------------------------------------------------------------

    def _serve_channel(self, pid: int, events: int) -> None:
        try:
            self._channels.serve(pid, events)
        except WireError as exc:
            log_event(
                log, logging.ERROR, "worker_channel_garbled", pid=pid, cause=str(exc), action="kill"
            )
            _signal_quietly(pid, signal.SIGKILL)

    def _on_ready(self, pid: int) -> None:
        worker = self._workers.get(pid)
        if worker is not None:
            worker.ready = True
            log_event(log, logging.INFO, "worker_ready", worker=worker.index, pid=pid)
            self._maybe_announce()

    def _maybe_announce(self) -> None:
        """``event=listening`` once every first-generation worker accepts (what tests wait for)."""
        if self._announced or self._stop_started is not None:
            return
        if sum(w.ready for w in self._workers.values()) == self._count:
            self._announced = True
            log_event(
                log,
                logging.INFO,
                "listening",
                path=self._settings.socket_path,
                pid=self._pid,
                workers=self._count,
            )

    # --- metrics --------------------------------------------------------------------------------

    def _start_metrics(self) -> None:
        if self._metrics is None:
            return
        endpoint = Endpoint(self._metrics.directory, self)
        self._http = HttpServer(self._metrics.address, self._selector, endpoint.respond)
        self._http.tick(time.monotonic())

    def runner_status(self) -> RunnerStatus:
        """For ``/ready``, ``/health`` and the runner's gauges."""
        wall, now = time.time(), time.monotonic()
        return RunnerStatus(
            expected_workers=self._count,
            workers=tuple(
                WorkerState(
                    w.pid,
                    wall - (now - w.started_at),
                    w.ready and self._silent_for(w, now) < self._unresponsive_after_s,
                )
                for w in self._workers.values()
            ),
            listening=self._listener is not None and self._stop_started is None,
            conf_tokens=len(self._registry),
            worker_restarts=self._restarts,
        )

    # --- signals and the socket ---------------------------------------------------------------

    def _install_signals(self) -> dict[int, object]:
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        return {sig: signal.signal(sig, _ignore_signal) for sig in _SIGNALS}

    def _restore_signals(self, previous: dict[int, object]) -> None:
        signal.set_wakeup_fd(-1)
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._identity is not None:
            unlink_if_ours(self._settings.socket_path, self._identity)
            self._identity = None


def _signal_quietly(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
