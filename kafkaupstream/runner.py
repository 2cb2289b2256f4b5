"""Assembles a runner: settings from APISIX's environment, the plugins, one or N processes.

``--workers 1`` is one process serving the socket itself (no fork). With more, the process APISIX
spawned becomes a supervisor that forks the workers (``server/supervisor.py``); each worker
builds its own plugins, so producers and their threads are created after the fork.

``--metrics-listen`` makes a private metrics directory before any fork and removes it at exit
(``observability/``); the parent (or the single process) serves the HTTP endpoint.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from kafkaupstream.api import Plugin
from kafkaupstream.builtin import StopPlugin
from kafkaupstream.logs import log_event
from kafkaupstream.observability import (
    Address,
    MetricsDir,
    MetricsSetup,
    RunnerStatus,
    Telemetry,
    WorkerState,
    parse_address,
)
from kafkaupstream.server import (
    ConfTokenRegistry,
    RunnerServer,
    ServerSettings,
    Supervisor,
    eventloop,
    parse_listen_address,
)
from kafkaupstream.server.confs import ConfList, LocalTokenStore, TokenStore

if TYPE_CHECKING:
    from kafkaupstream.spool import SpoolSettings

log = logging.getLogger(__name__)

#: Requests one worker lets past the body fetch at once (``--max-in-flight``). Normal traffic
#: holds throughput x latency (5,000 req/s x 10 ms = 50); only a stalled broker piles requests
#: up (each for up to ``timeout_ms``). 10,000 lets a worker ride out a stall of its sync routes
#: at 2,000 req/s for the default 5 s timeout, yet bounds what waiting requests hold to 10,000
#: bodies; lower it when bodies are large.
DEFAULT_MAX_IN_FLIGHT = 10_000


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    settings: ServerSettings
    test_plugins: bool = False
    #: Processes accepting on the socket; 1 = this process alone, no fork.
    workers: int = 1
    #: Requests each worker serves at once past the body fetch; more are answered 503.
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    #: Where ``/metrics``, ``/health`` and ``/ready`` are served; None: no metrics at all.
    metrics_listen: Address | None = None
    #: ``--spool-dir`` and its limits (the slot is filled in per worker); None: no spool.
    spool: SpoolSettings | None = None

    @classmethod
    def from_environment(
        cls,
        *,
        listen: str,
        conf_expire: str,
        shutdown_timeout_s: float,
        test_plugins: bool = False,
        workers: int = 1,
        max_in_flight: int | str | None = None,
        metrics_listen: str | None = None,
        spool_dir: str | None = None,
        spool_max_bytes: int | str | None = None,
        spool_max_age: float | str | None = None,
    ) -> RunnerOptions:
        """Validate what APISIX put in the environment; raises ValueError naming the variable.

        ``max_in_flight`` is ``--max-in-flight`` (an int), ``KAFKAUPSTREAM_MAX_IN_FLIGHT`` (its
        text) or None for :data:`DEFAULT_MAX_IN_FLIGHT`. ``metrics_listen`` is ``HOST:PORT``
        (``--metrics-listen`` or ``KAFKAUPSTREAM_METRICS_LISTEN``), empty or None for none.
        ``spool_*`` likewise: ``--spool-dir`` / ``KAFKAUPSTREAM_SPOOL_DIR`` (empty: no spool),
        ``--spool-max-bytes`` / ``KAFKAUPSTREAM_SPOOL_MAX_BYTES``, ``--spool-max-age`` /
        ``KAFKAUPSTREAM_SPOOL_MAX_AGE``.
        """
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
            max_in_flight=_max_in_flight(max_in_flight),
            metrics_listen=_metrics_listen(metrics_listen),
            spool=_spool(spool_dir, spool_max_bytes, spool_max_age),
        )


def _metrics_listen(value: str | None) -> Address | None:
    if not value:
        return None
    try:
        return parse_address(value)
    except ValueError as exc:
        raise ValueError(f"--metrics-listen / KAFKAUPSTREAM_METRICS_LISTEN: {exc}") from None


def _spool(
    directory: str | None, max_bytes: int | str | None, max_age: float | str | None
) -> SpoolSettings | None:
    if not directory:
        return None
    # Imported here: the parent of the workers never loads the producers' modules.
    from kafkaupstream.spool import DEFAULT_MAX_AGE_S, DEFAULT_MAX_BYTES, SpoolSettings

    limit = (
        DEFAULT_MAX_BYTES
        if max_bytes is None
        else _number("--spool-max-bytes / KAFKAUPSTREAM_SPOOL_MAX_BYTES", max_bytes, int)
    )
    age = (
        DEFAULT_MAX_AGE_S
        if max_age is None
        else _number("--spool-max-age / KAFKAUPSTREAM_SPOOL_MAX_AGE", max_age, float)
    )
    return SpoolSettings(os.path.abspath(directory), max_bytes=int(limit), max_age_s=float(age))


def _number(name: str, value: int | float | str, kind: type[int] | type[float]) -> float:
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return number


def _max_in_flight(value: int | str | None) -> int:
    if value is None:
        return DEFAULT_MAX_IN_FLIGHT
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ValueError(
                f"KAFKAUPSTREAM_MAX_IN_FLIGHT must be a whole number, got {value!r}"
            ) from None
        if value < 1:
            raise ValueError(f"KAFKAUPSTREAM_MAX_IN_FLIGHT must be at least 1, got {value}")
    elif value < 1:
        raise ValueError(f"--max-in-flight must be at least 1, got {value}")
    return value


def build_server(
    options: RunnerOptions,
    metrics: MetricsSetup | None,
    settings: ServerSettings,
    store: TokenStore,
) -> RunnerServer:
    """One process's server: its plugins and, with ``--metrics-listen``, its telemetry.

    The one place telemetry is wired: called in each worker after the fork (or once, by the
    single process), so producers, their threads and the metrics files are this process's own.
    """
    from kafkaupstream.plugin.kafka_plugin import KafkaUpstreamPlugin
    from kafkaupstream.producers import ProducerPool
    from kafkaupstream.spool import Spool

    telemetry = Telemetry(metrics.directory) if metrics is not None else None
    spool_factory = None
    if options.spool is not None:
        # Each worker owns the spool slot of its index and takes over the slots past the count.
        spool_settings = replace(options.spool, slot=settings.worker_slot, slots=options.workers)
        spool_factory = functools.partial(Spool, spool_settings)
    kafka = KafkaUpstreamPlugin(
        ProducerPool if telemetry is None else telemetry.pool_factory,
        max_in_flight=options.max_in_flight,
        spool_factory=spool_factory,
    )
    if telemetry is not None:
        telemetry.watch(kafka)
    plugins: list[Plugin] = [kafka]
    if options.test_plugins:
        plugins.append(StopPlugin())
    return RunnerServer(settings, plugins, store, telemetry)


def serve(options: RunnerOptions) -> int:
    """The ``run`` command: serve until SIGTERM/SIGINT; exit code 0 after an orderly shutdown."""
    if options.metrics_listen is None:
        return _serve(options, None)
    # Before any fork: every worker must inherit the directory and prometheus_client's mode.
    metrics = MetricsSetup(options.metrics_listen, MetricsDir.create())
    try:
        return _serve(options, metrics)
    finally:
        metrics.directory.remove()


def _serve(options: RunnerOptions, metrics: MetricsSetup | None) -> int:
    if options.workers == 1:
        return eventloop.run(run_runner(options, metrics))
    make_server = functools.partial(build_server, options, metrics)
    return Supervisor(options.settings, options.workers, make_server, metrics=metrics).run()


async def run_runner(options: RunnerOptions, metrics: MetricsSetup | None = None) -> int:
    """The single-process runner (``--workers 1``)."""
    registry: ConfTokenRegistry[ConfList] = ConfTokenRegistry(options.settings.conf_expire_s)
    server = build_server(options, metrics, options.settings, LocalTokenStore(registry))
    try:
        await server.start()
    except OSError as exc:
        log_event(
            log, logging.ERROR, "cannot_listen", path=options.settings.socket_path, cause=str(exc)
        )
        return 1
    http = None
    if metrics is not None:
        from kafkaupstream.observability.endpoint import Endpoint
        from kafkaupstream.observability.http import HttpThread

        endpoint = Endpoint(metrics.directory, _SingleProcess(server, registry))
        http = HttpThread(metrics.address, endpoint.respond)
        http.start()
    await server.serve_until_stopped()
    if http is not None:
        http.close()
    return 0


class _SingleProcess:
    """The runner state ``/ready`` and ``/health`` see with ``--workers 1``: this process."""

    def __init__(self, server: RunnerServer, registry: ConfTokenRegistry[ConfList]) -> None:
        self._server = server
        self._registry = registry
        self._started_at = time.time()

    def runner_status(self) -> RunnerStatus:
        accepting = not self._server.state.shutting_down
        return RunnerStatus(
            expected_workers=1,
            workers=(WorkerState(os.getpid(), self._started_at, accepting),),
            listening=accepting,
            conf_tokens=len(self._registry),
            worker_restarts=0,
        )
