"""The runner process: the unix socket APISIX connects to, the conf tokens, orderly shutdown.

Shutdown follows APISIX's budget: it sends SIGTERM, waits 1 s, then SIGKILLs. So on SIGTERM the
runner stops accepting, closes idle connections, lets in-flight exchanges finish for part of the
budget, answers whatever is left, closes the plugins (producer flush) in what remains, and exits 0.

One :class:`RunnerServer` is one process: the whole runner with ``--workers 1``, or one worker
accepting on a socket its parent bound (``supervisor.py``), with the parent's token store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from kafkaupstream.api import Plugin
from kafkaupstream.core import COMPILED, core
from kafkaupstream.logs import log_event
from kafkaupstream.server.confs import (
    LocalTokenStore,
    PrepareConfLimits,
    PreparedConfs,
    TokenStore,
)
from kafkaupstream.server.fdlimit import OpenFilesWatch
from kafkaupstream.server.handler import ApisixConnection, RunnerState
from kafkaupstream.server.tokens import ConfTokenRegistry

if TYPE_CHECKING:
    from kafkaupstream.observability import Telemetry

log = logging.getLogger(__name__)

#: nginx workers often run as another user than the master that spawned us; they need write
#: permission on the socket to connect (both reference runners use this mode).
SOCKET_MODE = 0o766
#: Signals that mean "stop cleanly" (socket removed, in-flight answered). SIGHUP too: a runner
#: has no configuration to reload, and dying of it would leave the socket file behind.
SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Kept back from the plugins' close for what follows it: the last metrics fold and the exit.
_EXIT_RESERVE_S = 0.1


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Everything the server needs to know; built by the CLI from APISIX's environment."""

    socket_path: str
    conf_expire_s: float = 3600.0
    #: Whole SIGTERM budget: in-flight drain, then plugin close (producer flush).
    #: APISIX kills at 1 s.
    shutdown_timeout_s: float = 0.8
    #: Share of the budget given to in-flight exchanges before they are answered 503.
    drain_share: float = 0.6
    conf_limits: PrepareConfLimits = field(default_factory=PrepareConfLimits)
    #: Which worker this process is (0 for a single process): it owns that spool slot.
    worker_slot: int = 0


def parse_listen_address(value: str) -> str:
    """``unix:/path`` (as APISIX sets ``APISIX_LISTEN_ADDRESS``) -> ``/path``."""
    if not value.startswith("unix:") or len(value) <= len("unix:"):
        raise ValueError(
            f"APISIX_LISTEN_ADDRESS must look like 'unix:/path/to/socket', got {value!r}"
        )
    return value[len("unix:") :]


class RunnerServer:
    """Owns the listening socket and the lifecycle of connections and plugins."""

    def __init__(
        self,
        settings: ServerSettings,
        plugins: Sequence[Plugin],
        store: TokenStore | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        """``telemetry`` (``--metrics-listen``): this process's metrics, run from here."""
        self.settings = settings
        by_name = {p.name: p for p in plugins}
        if store is None:
            store = LocalTokenStore(ConfTokenRegistry(settings.conf_expire_s))
        self._telemetry = telemetry
        self.state = RunnerState(
            plugins=by_name,
            confs=PreparedConfs(by_name, store),
            conf_limits=settings.conf_limits,
            recorder=telemetry.recorder if telemetry is not None else None,
        )
        self._server: asyncio.AbstractServer | None = None
        self._open_files: OpenFilesWatch | None = None
        self._socket_identity: tuple[int, int] | None = None
        self._stopped = asyncio.Event()

    async def start(self, sock: socket.socket | None = None) -> None:
        """Bind (unless a pre-bound socket is given), start the telemetry, start accepting.

        With a pre-bound socket (a worker's) the socket file is not ours to unlink.
        """
        if self._telemetry is not None:
            self._telemetry.start()
        bound_here = sock is None
        if sock is None:
            sock = bind_unix_socket(self.settings.socket_path)
            self._socket_identity = socket_identity(self.settings.socket_path)
        for plugin in self.state.plugins.values():
            await plugin.start()
        loop = asyncio.get_running_loop()
        self._open_files = OpenFilesWatch(loop)
        self._server = await loop.create_unix_server(
            protocol_factory(self.state), sock=sock, backlog=1024
        )
        event = "listening" if bound_here else "worker_accepting"
        log_event(log, logging.INFO, event, path=self.settings.socket_path, pid=os.getpid())

    def request_shutdown(self) -> None:
        """Signal handler entry point (:data:`SHUTDOWN_SIGNALS`): idempotent."""
        if not self.state.shutting_down:
            log_event(log, logging.INFO, "shutdown_requested")
            self.state.shutting_down = True
            self._stopped.set()

    async def serve_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in SHUTDOWN_SIGNALS:
            loop.add_signal_handler(sig, self.request_shutdown)
        await self._stopped.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting, drain in-flight exchanges, close plugins; bounded by the budget."""
        started = time.monotonic()
        budget = self.settings.shutdown_timeout_s
        self.state.shutting_down = True
        if self._server is not None:
            self._server.close()
        if self._open_files is not None:
            self._open_files.close()
        self._unlink_socket_if_ours()
        for conn in list(self.state.connections):
            conn.close_if_idle()
        busy = [c.task for c in self.state.connections if c.busy and c.task is not None]
        drain_s = budget * self.settings.drain_share
        if busy:
            _done, pending = await asyncio.wait(busy, timeout=drain_s)
            for task in pending:
                task.cancel()
            if pending:
                log_event(log, logging.WARNING, "shutdown_cancelled_exchanges", count=len(pending))
                await asyncio.wait(pending, timeout=0.05)
        for conn in list(self.state.connections):
            conn.abort()
        # What is left of the budget, less what the telemetry's last count and the exit take.
        remaining = max(0.05, budget - (time.monotonic() - started) - _EXIT_RESERVE_S)
        if self._telemetry is not None:
            await self._telemetry.stop()
        for plugin in self.state.plugins.values():
            try:
                await plugin.close(remaining)
            except Exception:
                log_event(
                    log, logging.ERROR, "plugin_close_failed", exc_info=True, plugin=plugin.name
                )
        if self._telemetry is not None:
            self._telemetry.close()
        log_event(log, logging.INFO, "stopped", elapsed_ms=int((time.monotonic() - started) * 1000))

    def _unlink_socket_if_ours(self) -> None:
        if self._socket_identity is not None:
            unlink_if_ours(self.settings.socket_path, self._socket_identity)


def protocol_factory(state: RunnerState) -> Callable[[], asyncio.BaseProtocol]:
    """Connections of the compiled core's lane, or of the general handler in pure Python."""
    if core() == COMPILED:
        from kafkaupstream.server.lane import LaneConnection

        return partial(LaneConnection, state)  # type: ignore[return-value]
    return partial(ApisixConnection, state)


def socket_identity(path: str) -> tuple[int, int]:
    """(st_dev, st_ino) of the socket file we just bound, to recognise it at exit."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def unlink_if_ours(path: str, identity: tuple[int, int]) -> None:
    """Unlink only the socket we created: on reload a new runner may already own the path."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if (st.st_dev, st.st_ino) == identity:
        os.unlink(path)
    else:
        log_event(log, logging.INFO, "socket_kept", reason="replaced_by_another_runner")


def bind_unix_socket(path: str) -> socket.socket:
    """Listen on a unix socket at ``path``, replacing a stale socket file (never other files)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(f"{path} exists and is not a socket; refusing to replace it")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, SOCKET_MODE)
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
