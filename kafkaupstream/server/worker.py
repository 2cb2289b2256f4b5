"""One worker of a multi-worker runner: what the child runs after fork (parent: supervisor.py).

The worker gets the listening socket its parent bound and its own channel to the parent's token
service; it builds its plugins and event loop itself, so producers and their threads only ever
exist after the fork. It dies with its parent: prctl's parent-death signal on Linux, and the
channel's EOF everywhere (a graceful shutdown, for platforms without prctl).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NoReturn

from kafkaupstream.logs import log_event
from kafkaupstream.server import eventloop
from kafkaupstream.server.app import RunnerServer, ServerSettings
from kafkaupstream.server.confs import TokenStore
from kafkaupstream.server.token_client import RemoteTokenStore
from kafkaupstream.server.tokens import TTL_FACTOR

log = logging.getLogger(__name__)

#: <linux/prctl.h>
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs, handed over by the fork itself (nothing is pickled)."""

    index: int
    settings: ServerSettings
    listener: socket.socket
    channel: socket.socket
    #: Builds this process's server (its plugins, its metrics) around the given token store.
    make_server: Callable[[ServerSettings, TokenStore], RunnerServer]
    parent_pid: int


def set_parent_death_signal(sig: signal.Signals) -> bool:
    """Ask the kernel to send ``sig`` when the parent exits (Linux); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    return int(prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0


def fork_worker(
    spec: WorkerSpec, inherited: Iterable[socket.socket], signals: Iterable[signal.Signals]
) -> int:
    """Fork; in the child close ``inherited``, reset ``signals`` and be the worker. Child's pid.

    The signals stay blocked across the fork, so none reaches the child while it still has the
    parent's handlers and wake-up fd (a SIGTERM would otherwise look like the parent's own).
    """
    signals = tuple(signals)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid == 0:
        _child(spec, inherited, signals, mask)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return pid


def _child(
    spec: WorkerSpec,
    inherited: Iterable[socket.socket],
    signals: tuple[signal.Signals, ...],
    mask: Iterable[int],
) -> NoReturn:
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in signals:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for sock in inherited:
            sock.close()
        code = run_worker(spec)
    except BaseException:
        log_event(log, logging.ERROR, "worker_crashed", exc_info=True, worker=spec.index)
    finally:  # never return into the parent's stack (its loop, its finally blocks)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def describe_exit(code: int) -> str:
    """``os.waitstatus_to_exitcode`` result as a log cause."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def run_worker(spec: WorkerSpec) -> int:
    """The worker's whole life; returns its exit code (the caller must ``os._exit`` with it)."""
    # SIGKILL, not SIGTERM: the parent dies abruptly only when APISIX's 1 s budget is over
    # (or on a crash); the drain the parent would have coordinated is no longer possible.
    if not set_parent_death_signal(signal.SIGKILL):
        log_event(log, logging.WARNING, "no_parent_death_signal", fallback="channel_eof")
    if os.getppid() != spec.parent_pid:  # the parent died before prctl took effect
        return 0
    return eventloop.run(_serve(spec))


async def _serve(spec: WorkerSpec) -> int:
    store = RemoteTokenStore(spec.channel, spec.settings.conf_expire_s * TTL_FACTOR)
    server = spec.make_server(spec.settings, store)
    store.on_lost = server.request_shutdown
    await store.connect()
    await server.start(spec.listener)
    store.announce_ready(os.getpid())
    await server.serve_until_stopped()
    store.close()
    return 0
