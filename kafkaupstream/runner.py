"""Assembles a runner: settings from APISIX's environment, the plugins, one or N processes.

``--workers 1`` is one process serving the socket itself (no fork). With more, the process APISIX
spawned becomes a supervisor that forks the workers (``server/supervisor.py``); each worker
builds its own plugins, so producers and their threads are created after the fork.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass

from kafkaupstream.api import Plugin
from kafkaupstream.builtin import StopPlugin
from kafkaupstream.server import RunnerServer, ServerSettings, Supervisor, parse_listen_address

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    settings: ServerSettings
    test_plugins: bool = False
    #: Processes accepting on the socket; 1 = this process alone, no fork.
    workers: int = 1

    @classmethod
    def from_environment(
        cls,
        *,
        listen: str,
        conf_expire: str,
        shutdown_timeout_s: float,
        test_plugins: bool = False,
        workers: int = 1,
    ) -> RunnerOptions:
        """Validate what APISIX put in the environment; raises ValueError naming the variable."""
        if not listen:
            raise ValueError("APISIX_LISTEN_ADDRESS is not set (APISIX sets it when it spawns us)")
        path = parse_listen_address(listen)
        try:
            expire_s = float(conf_expire)
        except ValueError:
            raise ValueError(
                f"APISIX_CONF_EXPIRE_TIME must be a number, got {conf_expire!r}"
            ) from None
        if expire_s <= 0:
            raise ValueError("APISIX_CONF_EXPIRE_TIME must be positive")
        if shutdown_timeout_s <= 0:
            raise ValueError("--shutdown-timeout must be positive")
        if workers < 1:
            raise ValueError("--workers must be at least 1")
        return cls(
            settings=ServerSettings(
                socket_path=path, conf_expire_s=expire_s, shutdown_timeout_s=shutdown_timeout_s
            ),
            test_plugins=test_plugins,
            workers=workers,
        )


def build_plugins(options: RunnerOptions) -> list[Plugin]:
    """The plugins this runner serves, by conf name."""
    from kafkaupstream.plugin.kafka_plugin import KafkaUpstreamPlugin

    plugins: list[Plugin] = [KafkaUpstreamPlugin()]
    if options.test_plugins:
        plugins.append(StopPlugin())
    return plugins


def serve(options: RunnerOptions) -> int:
    """The ``run`` command: serve until SIGTERM/SIGINT; exit code 0 after an orderly shutdown."""
    if options.workers == 1:
        return asyncio.run(run_runner(options))
    make_plugins = functools.partial(build_plugins, options)
    return Supervisor(options.settings, options.workers, make_plugins).run()


async def run_runner(options: RunnerOptions) -> int:
    """The single-process runner (``--workers 1``)."""
    server = RunnerServer(options.settings, build_plugins(options))
    try:
        await server.start()
    except OSError as exc:
        log.error("event=cannot_listen path=%s cause=%r", options.settings.socket_path, str(exc))
        return 1
    await server.serve_until_stopped()
    return 0
