"""The ``kafkaupstream`` plugin: every request on the route becomes one Kafka record (a batch
route's request many: ``batch.py``).

PrepareConf validates the route's configuration once; each request then goes headers first
(refused before its body is fetched when it cannot be served), body second, then to the
producer shared by every route with the same producer config, and the delivery outcome becomes
the HTTP answer. The plugin answers every request itself, so the route needs no upstream.

Requests between their body fetch and their answer are counted: over ``max_in_flight`` a request
is answered ``503 backpressure`` before its body is fetched, so a stalled broker costs quick
refusals instead of memory for bodies that wait on delivery reports.

Metrics see the plugin from outside: the server counts its answers, and the worker's monitor
(``observability/monitor.py``) reads :attr:`in_flight`, :attr:`producer_pool` and the refusal
counts each second; the plugin itself knows nothing of metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kafkaupstream.api import Answer, HTTPRequest, Plugin
from kafkaupstream.logs import RateLimit, log_event
from kafkaupstream.plugin.answers import (
    SHUTTING_DOWN,
    TOO_MANY_IN_FLIGHT,
    RequestError,
    batch_answer,
    outcome_answer,
)
from kafkaupstream.plugin.answers import route_config_invalid as config_invalid_answer
from kafkaupstream.plugin.batch import build_batch, check_content_type
from kafkaupstream.plugin.config import RouteConfig, RouteConfigError, parse_route_config
from kafkaupstream.plugin.record import Routing, build_record, route_request
from kafkaupstream.producers import (
    Backpressure,
    ProducerClosedError,
    ProducerConfigError,
    ProducerPool,
)

log = logging.getLogger(__name__)

#: Bodies this large are validated and compacted on a thread: the C JSON scanner holds the GIL,
#: but the interpreter hands it back to the event loop every few milliseconds, so other requests
#: keep moving while a megabyte (or a hostile, deeply nested body) is checked.
_OFF_LOOP_BYTES = 256 * 1024

#: Refusals over the in-flight cap are logged at most this often (with a count), not per request.
_CAP_LOG_INTERVAL_S = 5.0


class KafkaUpstreamPlugin(Plugin):
    """Conf name ``kafkaupstream``; owns the producer pool of this runner process."""

    name = "kafkaupstream"

    def __init__(
        self,
        pool_factory: Callable[[], ProducerPool] = ProducerPool,
        *,
        max_in_flight: int | None = None,
    ) -> None:
        """``max_in_flight``: requests let past the body fetch at once (None: no cap)."""
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._pool_factory = pool_factory
        self._pool: ProducerPool | None = None
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        #: ``503 backpressure`` answers since start, by reason (``queue_full``, ``in_flight_cap``);
        #: a batch whose tail a full queue refused (a 207) counts too.
        self.refused_queue_full = 0
        self.refused_in_flight_cap = 0
        self._cap_log = RateLimit(_CAP_LOG_INTERVAL_S)

    @property
    def pool(self) -> ProducerPool:
        # Created on first use, never at import or construction: a forking runner must create
        # producers (and their threads) in the worker, after the fork.
        if self._pool is None:
            self._pool = self._pool_factory()
        return self._pool

    @property
    def producer_pool(self) -> ProducerPool | None:
        """The pool if a request created it already (for telemetry: never creates one)."""
        return self._pool

    @property
    def in_flight(self) -> int:
        """Requests between their body fetch and their answer now."""
        return self._in_flight

    def prepare(self, value: str) -> RouteConfig | RouteConfigError:
        try:
            return parse_route_config(value)
        except RouteConfigError as exc:
            # The field and the reason only: the value may be a password.
            log_event(
                log, logging.WARNING, "route_config_invalid", field=exc.field, reason=exc.reason
            )
            return exc

    async def handle(self, state: RouteConfig | RouteConfigError, request: HTTPRequest) -> Answer:
        if isinstance(state, RouteConfigError):
            return config_invalid_answer(state.field, state.reason)
        config: RouteConfig = state
        try:
            routing = route_request(config, request.headers)
            if config.batch is not None:
                check_content_type(config, request.headers)
        except RequestError as exc:
            log_event(log, logging.DEBUG, "request_refused", status=exc.status, error=exc.code)
            return exc.answer()
        if self._max_in_flight is not None and self._in_flight >= self._max_in_flight:
            self._refuse_over_cap()
            return TOO_MANY_IN_FLIGHT
        # Counted from before the body fetch to the answer: what a request holds meanwhile
        # (its body, its record, a wait on the delivery report) is what the cap bounds.
        self._in_flight += 1
        try:
            if config.batch is not None:
                return await self._handle_batch(config, routing, request)
            try:
                body = await request.body()
                if len(body) > _OFF_LOOP_BYTES:
                    record = await asyncio.to_thread(build_record, config, routing, body)
                else:
                    record = build_record(config, routing, body)
            except RequestError as exc:
                log_event(log, logging.DEBUG, "request_refused", status=exc.status, error=exc.code)
                return exc.answer()
            try:
                producer = self.pool.get_canonical(config.producer_config)
                outcome = await producer.produce(
                    record, wait=config.sync, timeout=config.timeout_ms / 1000
                )
            except ProducerConfigError as exc:
                log_event(log, logging.ERROR, "producer_refused", cause=str(exc))
                return config_invalid_answer("config", "librdkafka refused it (see the runner log)")
            except ProducerClosedError:
                return SHUTTING_DOWN
            if type(outcome) is Backpressure:
                self.refused_queue_full += 1
            return outcome_answer(outcome, config.timeout_ms)
        finally:
            self._in_flight -= 1

    async def _handle_batch(
        self, config: RouteConfig, routing: Routing, request: HTTPRequest
    ) -> Answer:
        """A batch route's request: every record built before any is produced, one answer."""
        try:
            body = await request.body()
            if len(body) > _OFF_LOOP_BYTES:
                records = await asyncio.to_thread(build_batch, config, routing, body)
            else:
                records = build_batch(config, routing, body)
        except RequestError as exc:
            log_event(log, logging.DEBUG, "request_refused", status=exc.status, error=exc.code)
            return exc.answer()
        try:
            producer = self.pool.get_canonical(config.producer_config)
            outcomes = await producer.produce_all(
                records, wait=config.sync, timeout=config.timeout_ms / 1000
            )
        except ProducerConfigError as exc:
            log_event(log, logging.ERROR, "producer_refused", cause=str(exc))
            return config_invalid_answer("config", "librdkafka refused it (see the runner log)")
        except ProducerClosedError:
            return SHUTTING_DOWN
        answer = batch_answer(
            routing.topic, outcomes, sync=config.sync, timeout_ms=config.timeout_ms
        )
        if type(outcomes[-1]) is Backpressure:  # a full queue refuses a batch's tail, or all
            self.refused_queue_full += 1
        return answer

    def _refuse_over_cap(self) -> None:
        # One warning per interval with the number refused since the last one, not one per
        # request: under a broker stall that could be thousands a second.
        self.refused_in_flight_cap += 1
        self._cap_log.log(
            log,
            logging.WARNING,
            "in_flight_cap_reached",
            counted="refused",
            max_in_flight=self._max_in_flight,
        )

    async def close(self, timeout: float) -> None:
        if self._pool is not None:
            await self._pool.close(timeout)
