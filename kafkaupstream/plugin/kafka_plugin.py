"""The ``kafkaupstream`` plugin: every request on the route becomes one Kafka record (a batch
route's request many: ``batch.py``).

PrepareConf validates the route's configuration once; each request then goes headers first
(refused before its body is fetched when it cannot be served), body second, then to the
producer shared by every route with the same producer config, and the delivery outcome becomes
the HTTP answer. The plugin answers every request itself, so the route needs no upstream.

Two bounds, counted apart: requests waiting for their body (``max_awaiting_body``; APISIX reads
the client's body only when asked, so a slow upload waits here) and requests holding a body,
from its arrival to their answer (``max_in_flight``). Over either, a request is answered ``503
backpressure``; the in-flight cap is checked before the body fetch (a stalled broker costs quick
refusals, no body round trips) and again when the body arrives. Slow uploads therefore never
take the slots of requests whose bodies came.

Metrics see the plugin from outside: the server counts its answers, and the worker's monitor
(``observability/monitor.py``) reads :attr:`in_flight`, :attr:`awaiting_body`,
:attr:`producer_pool` and the refusal counts each second; the plugin itself knows nothing of
metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from kafkaupstream.api import Answer, HTTPRequest, Plugin
from kafkaupstream.logs import RateLimit, log_event
from kafkaupstream.plugin.answers import (
    SHUTTING_DOWN,
    TOO_MANY_AWAITING_BODY,
    TOO_MANY_IN_FLIGHT,
    TOO_MANY_PRODUCERS,
    UNKNOWN_HEADER_TOPIC,
    RequestError,
    batch_answer,
    outcome_answer,
    spool_answer,
    topic_lookup_failed,
)
from kafkaupstream.plugin.answers import route_config_invalid as config_invalid_answer
from kafkaupstream.plugin.batch import build_batch, check_content_type
from kafkaupstream.plugin.config import RouteConfig, RouteConfigError, parse_route_config
from kafkaupstream.plugin.record import Routing, build_record, route_request
from kafkaupstream.producers import (
    Backpressure,
    PooledProducer,
    ProducerClosedError,
    ProducerConfigError,
    ProducerLimitReached,
    ProducerPool,
    TopicLookupFailed,
)
from kafkaupstream.spool import Spool, SpoolClosedError

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
        max_awaiting_body: int | None = None,
        spool_factory: Callable[[Callable[[], ProducerPool]], Spool] | None = None,
    ) -> None:
        """``max_in_flight``: requests holding their body at once; ``max_awaiting_body``:
        requests waiting for it at once (None: no cap).

        ``spool_factory`` (``--spool-dir``) makes the spool of ``delivery: "spool"`` routes from
        a getter of this plugin's producer pool; without it such routes are invalid.
        """
        for name, cap in (
            ("max_in_flight", max_in_flight),
            ("max_awaiting_body", max_awaiting_body),
        ):
            if cap is not None and cap < 1:
                raise ValueError(f"{name} must be at least 1")
        self._pool_factory = pool_factory
        self._pool: ProducerPool | None = None
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._max_awaiting_body = max_awaiting_body
        self._awaiting_body = 0
        #: ``503 backpressure`` answers since start, by reason (``queue_full``, ``in_flight_cap``,
        #: ``awaiting_body_cap``); a batch whose tail a full queue refused (a 207) counts too.
        self.refused_queue_full = 0
        self.refused_in_flight_cap = 0
        self.refused_awaiting_body_cap = 0
        self._cap_log = RateLimit(_CAP_LOG_INTERVAL_S)
        self._awaiting_log = RateLimit(_CAP_LOG_INTERVAL_S)
        self._producer_cap_log = RateLimit(_CAP_LOG_INTERVAL_S)
        self._spool = spool_factory(lambda: self.pool) if spool_factory is not None else None

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
    def spool(self) -> Spool | None:
        """The spool of this process (``--spool-dir``), for telemetry."""
        return self._spool

    @property
    def in_flight(self) -> int:
        """Requests between the arrival of their body and their answer now."""
        return self._in_flight

    @property
    def awaiting_body(self) -> int:
        """Requests waiting for APISIX to hand over their body now."""
        return self._awaiting_body

    def prepare(self, value: str) -> RouteConfig | RouteConfigError:
        try:
            config = parse_route_config(value)
            if config.spooled and self._spool is None:
                raise RouteConfigError(
                    "delivery",
                    "'spool' needs the runner's --spool-dir (env KAFKAUPSTREAM_SPOOL_DIR)",
                )
            return config
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
        if routing.topic != config.topic:  # the header chose it: it must exist already
            refused = await self._unknown_topic(config, routing.topic)
            if refused is not None:
                return refused
        refused = self.admit()
        if refused is not None:
            return refused
        try:
            body = await request.body()
        except BaseException:
            self.abandon()
            raise
        refused = self.body_arrived()
        if refused is not None:
            return refused
        try:
            if config.batch is not None:
                return await self._handle_batch(config, routing, body)
            try:
                if len(body) > _OFF_LOOP_BYTES:
                    record = await asyncio.to_thread(build_record, config, routing, body)
                else:
                    record = build_record(config, routing, body)
            except RequestError as exc:
                log_event(log, logging.DEBUG, "request_refused", status=exc.status, error=exc.code)
                return exc.answer()
            if self._spool is not None and config.spooled:
                try:
                    return spool_answer(await self._spool.append(config.producer_config, record))
                except SpoolClosedError:
                    return SHUTTING_DOWN
            producer = self._producer(config)
            if isinstance(producer, Answer):
                return producer
            try:
                outcome = await producer.produce(
                    record, wait=config.sync, timeout=config.timeout_ms / 1000
                )
            except ProducerClosedError:
                return SHUTTING_DOWN
            if type(outcome) is Backpressure:
                self.refused_queue_full += 1
            return outcome_answer(outcome, config.timeout_ms)
        finally:
            self.finished()

    # --- the two caps: the one place that counts them (the compiled lane calls these too) ------

    def admit(self) -> Answer | None:
        """Before the body fetch: the refusal, or None with the request counted as awaiting it.

        Over ``max_in_flight`` already (a stalled broker), a request is refused without a body
        round trip; over ``max_awaiting_body``, slow uploads are the ones refused.
        """
        cap = self._max_in_flight
        if cap is not None and self._in_flight >= cap:
            return self._refuse_over_cap()
        cap = self._max_awaiting_body
        if cap is not None and self._awaiting_body >= cap:
            return self._refuse_awaiting_body()
        self._awaiting_body += 1
        return None

    def abandon(self) -> None:
        """An admitted request that will never get its body (the connection went)."""
        self._awaiting_body -= 1

    def body_arrived(self) -> Answer | None:
        """The body came: the refusal, or None with the request counted as in flight.

        Counted from the body's arrival to the answer: what a request holds meanwhile (its body,
        its record, a wait on the delivery report) is what ``max_in_flight`` bounds.
        """
        self._awaiting_body -= 1
        cap = self._max_in_flight
        if cap is not None and self._in_flight >= cap:
            return self._refuse_over_cap()
        self._in_flight += 1
        return None

    def finished(self) -> None:
        """An in-flight request was answered."""
        self._in_flight -= 1

    def _producer(self, config: RouteConfig) -> PooledProducer | Answer:
        """The route's producer, or the answer when there can be none."""
        try:
            return self.pool.get_canonical(config.producer_config)
        except ProducerConfigError as exc:
            log_event(log, logging.ERROR, "producer_refused", cause=str(exc))
            return config_invalid_answer("config", "librdkafka refused it (see the runner log)")
        except ProducerLimitReached as exc:
            self._producer_cap_log.log(
                log,
                logging.WARNING,
                "producer_cap_reached",
                counted="refused",
                max_producers=exc.limit,
            )
            return TOO_MANY_PRODUCERS
        except ProducerClosedError:
            return SHUTTING_DOWN

    async def _unknown_topic(self, config: RouteConfig, topic: str) -> Answer | None:
        """None when ``topic`` exists on the route's brokers, else the answer refusing it."""
        producer = self._producer(config)
        if isinstance(producer, Answer):
            return producer
        try:
            if await producer.topics.exists(topic):
                return None
        except TopicLookupFailed as exc:
            log_event(log, logging.DEBUG, "request_refused", status=503, error="kafka_unavailable")
            return topic_lookup_failed(str(exc))
        log_event(
            log, logging.DEBUG, "request_refused", status=404, error="unknown_topic_or_partition"
        )
        return UNKNOWN_HEADER_TOPIC

    async def _handle_batch(self, config: RouteConfig, routing: Routing, body: bytes) -> Answer:
        """A batch route's request: every record built before any is produced, one answer."""
        try:
            if len(body) > _OFF_LOOP_BYTES:
                records = await asyncio.to_thread(build_batch, config, routing, body)
            else:
                records = build_batch(config, routing, body)
        except RequestError as exc:
            log_event(log, logging.DEBUG, "request_refused", status=exc.status, error=exc.code)
            return exc.answer()
        producer = self._producer(config)
        if isinstance(producer, Answer):
            return producer
        try:
            outcomes = await producer.produce_all(
                records, wait=config.sync, timeout=config.timeout_ms / 1000
            )
        except ProducerClosedError:
            return SHUTTING_DOWN
        answer = batch_answer(
            routing.topic, outcomes, sync=config.sync, timeout_ms=config.timeout_ms
        )
        if type(outcomes[-1]) is Backpressure:  # a full queue refuses a batch's tail, or all
            self.refused_queue_full += 1
        return answer

    def _refuse_over_cap(self) -> Answer:
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
        return TOO_MANY_IN_FLIGHT

    def _refuse_awaiting_body(self) -> Answer:
        self.refused_awaiting_body_cap += 1
        self._awaiting_log.log(
            log,
            logging.WARNING,
            "awaiting_body_cap_reached",
            counted="refused",
            max_awaiting_body=self._max_awaiting_body,
        )
        return TOO_MANY_AWAITING_BODY

    async def start(self) -> None:
        if self._spool is not None:
            await self._spool.start()

    async def close(self, timeout: float) -> None:
        started = time.monotonic()
        if self._spool is not None:
            # Forwarded records still in a producer are flushed (or purged) with it below;
            # the spool then commits the removals of those that were delivered.
            self._spool.stop_forwarding()
        if self._pool is not None:
            await self._pool.close(timeout * 0.8 if self._spool is not None else timeout)
        if self._spool is not None:
            await self._spool.close(max(0.0, timeout - (time.monotonic() - started)))
