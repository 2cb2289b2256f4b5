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
from kafkaupstream.core import core, describe
from kafkaupstream.logs import log_event
from kafkaupstream.observability import (
    STALL_AFTER_S,
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
from kafkaupstream.server.tokens import TTL_FACTOR

if TYPE_CHECKING:
    from kafkaupstream.spool import SpoolSettings

log = logging.getLogger(__name__)

#: Requests one worker lets past the body fetch at once (``--max-in-flight``). Normal traffic
#: holds throughput x latency (5,000 req/s x 10 ms = 50); only a stalled broker piles requests
#: up (each for up to ``timeout_ms``). 10,000 lets a worker ride out a stall of its sync routes
#: at 2,000 req/s for the default 5 s timeout, yet bounds what waiting requests hold to 10,000
#: bodies; lower it when bodies are large.
DEFAULT_MAX_IN_FLIGHT = 10_000
#: Requests one worker lets wait for their body at once (``--max-awaiting-body``). APISIX reads
#: a client's body only when the runner asks, so a slow upload waits here, holding its headers
#: and an APISIX connection but no body. As many as ``--max-in-flight``: slow uploads then fill
#: this bound long before they could take the slots of requests whose bodies came.
DEFAULT_MAX_AWAITING_BODY = 10_000
#: Producers one worker holds at most (``--max-producers``). Each costs about four threads, five
#: file descriptors, 0.34 MiB and 0.1 % of a core while idle; a runner needs one per distinct
#: route ``config`` (cluster, credentials, tuning), plus superseded ones until they are released.
DEFAULT_MAX_PRODUCERS = 100
#: How long a producer outlives the last conf token that used it (``--producer-grace``).
DEFAULT_PRODUCER_GRACE_S = 60.0
#: A worker silent this long is killed and replaced by its parent (``--worker-timeout``): ten
#: missed heartbeats, far beyond any pause of a healthy event loop (a PrepareConf is bounded).
DEFAULT_WORKER_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    settings: ServerSettings
    test_plugins: bool = False
    #: Processes accepting on the socket; 1 = this process alone, no fork.
    workers: int = 1
    #: Requests each worker holds at once from their body's arrival on; more are answered 503.
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    #: Requests each worker lets wait for their body at once; more are answered 503.
    max_awaiting_body: int = DEFAULT_MAX_AWAITING_BODY
    #: Where ``/metrics``, ``/health`` and ``/ready`` are served; None: no metrics at all.
    metrics_listen: Address | None = None
    #: Producers each worker holds at most; a request needing one more is answered 503.
    max_producers: int = DEFAULT_MAX_PRODUCERS
    #: A producer no request used for the conf-token TTL plus this is released.
    producer_grace_s: float = DEFAULT_PRODUCER_GRACE_S
    #: Records pending this long without a successful delivery make ``/health`` degraded.
    stall_after_s: float = STALL_AFTER_S
    #: The parent kills and replaces a worker that sent no heartbeat for this long.
    worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S

    @property
    def producer_idle_s(self) -> float:
        """How long a producer may go unused: its tokens' lifetime, then the grace period."""
        return self.settings.conf_expire_s * TTL_FACTOR + self.producer_grace_s

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
        max_awaiting_body: int | str | None = None,
        metrics_listen: str | None = None,
        max_producers: int | str | None = None,
        producer_grace: float | str | None = None,
        stall_after: float | str | None = None,
        worker_timeout: float | str | None = None,
        spool_dir: str | None = None,
        spool_max_bytes: int | str | None = None,
        spool_max_age: float | str | None = None,
    ) -> RunnerOptions:
        """Validate what APISIX put in the environment; raises ValueError naming the variable.

        ``max_in_flight`` is ``--max-in-flight`` (an int), ``KAFKAUPSTREAM_MAX_IN_FLIGHT`` (its
        text) or None for :data:`DEFAULT_MAX_IN_FLIGHT`; ``max_awaiting_body`` likewise
        (``--max-awaiting-body``, ``KAFKAUPSTREAM_MAX_AWAITING_BODY``,
        :data:`DEFAULT_MAX_AWAITING_BODY`). ``metrics_listen`` is ``HOST:PORT``
        (``--metrics-listen`` or ``KAFKAUPSTREAM_METRICS_LISTEN``), empty or None for none.
        ``max_producers``, ``producer_grace``, ``stall_after`` and ``worker_timeout`` likewise:
        the flag's number, the variable's text, or None for the default.
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
            max_in_flight=_cap(max_in_flight, "max-in-flight", DEFAULT_MAX_IN_FLIGHT),
            max_awaiting_body=_cap(
                max_awaiting_body, "max-awaiting-body", DEFAULT_MAX_AWAITING_BODY
            ),
            metrics_listen=_metrics_listen(metrics_listen),
            max_producers=_cap(max_producers, "max-producers", DEFAULT_MAX_PRODUCERS),
            producer_grace_s=_number(
                producer_grace, DEFAULT_PRODUCER_GRACE_S, "producer-grace", minimum=0
            ),
            stall_after_s=_number(stall_after, STALL_AFTER_S, "stall-after", minimum=1),
            worker_timeout_s=_number(
                worker_timeout, DEFAULT_WORKER_TIMEOUT_S, "worker-timeout", minimum=3
            ),
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

    return SpoolSettings(
        os.path.abspath(directory),
        max_bytes=_cap(max_bytes, "spool-max-bytes", DEFAULT_MAX_BYTES),
        max_age_s=float(_number(max_age, DEFAULT_MAX_AGE_S, "spool-max-age", minimum=1)),
    )


def _cap(value: int | str | None, flag: str, default: int) -> int:
    """A ``--FLAG`` count (an int) or its ``KAFKAUPSTREAM_FLAG`` variable (text); None: default."""
    if value is None:
        return default
    if isinstance(value, str):
        variable = "KAFKAUPSTREAM_" + flag.replace("-", "_").upper()
        try:
            value = int(value)
        except ValueError:
            raise ValueError(f"{variable} must be a whole number, got {value!r}") from None
        if value < 1:
            raise ValueError(f"{variable} must be at least 1, got {value}")
    elif value < 1:
        raise ValueError(f"--{flag} must be at least 1, got {value}")
    return value


def _number(value: float | str | None, default: float, flag: str, *, minimum: float) -> float:
    """A flag's value (a number) or its environment variable's text; None for the default."""
    if value is None:
        return default
    name = f"--{flag}"
    if isinstance(value, str):
        name = "KAFKAUPSTREAM_" + flag.upper().replace("-", "_")
        try:
            value = int(value) if isinstance(default, int) else float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not value >= minimum:  # also refuses NaN
        raise ValueError(f"{name} must be at least {minimum:g}, got {value}")
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

    telemetry = (
        Telemetry(metrics.directory, stall_after_s=options.stall_after_s)
        if metrics is not None
        else None
    )

    def make_pool() -> ProducerPool:
        return ProducerPool(
            # With telemetry, every delivery report is counted.
            observer=telemetry.recorder.delivery if telemetry is not None else None,
            max_producers=options.max_producers,
            idle_after_s=options.producer_idle_s,
        )

    spool_factory = None
    if options.spool is not None:
        # Each worker owns the spool slot of its index and takes over the slots past the count.
        spool_settings = replace(options.spool, slot=settings.worker_slot, slots=options.workers)
        spool_factory = functools.partial(Spool, spool_settings)
    kafka = KafkaUpstreamPlugin(
        make_pool,
        max_in_flight=options.max_in_flight,
        max_awaiting_body=options.max_awaiting_body,
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
    log_event(log, logging.INFO, "core", core=core(), build=describe())
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
    return Supervisor(
        options.settings,
        options.workers,
        make_server,
        metrics=metrics,
        worker_timeout_s=options.worker_timeout_s,
    ).run()


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
