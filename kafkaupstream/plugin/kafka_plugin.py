"""The ``kafkaupstream`` plugin: every request on the route becomes one Kafka record.

PrepareConf validates the route's configuration once; each request then goes headers first
(refused before its body is fetched when it cannot be served), body second, then to the
producer shared by every route with the same producer config, and the delivery outcome becomes
the HTTP answer. The plugin answers every request itself, so the route needs no upstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kafkaupstream.api import Answer, HTTPRequest, Plugin
from kafkaupstream.plugin.answers import RequestError, error_answer, outcome_answer
from kafkaupstream.plugin.answers import route_config_invalid as config_invalid_answer
from kafkaupstream.plugin.config import RouteConfig, RouteConfigError, parse_route_config
from kafkaupstream.plugin.record import build_record, route_request
from kafkaupstream.producers import ProducerClosedError, ProducerConfigError, ProducerPool

log = logging.getLogger(__name__)

#: Bodies this large are validated and compacted on a thread: the C JSON scanner holds the GIL,
#: but the interpreter hands it back to the event loop every few milliseconds, so other requests
#: keep moving while a megabyte (or a hostile, deeply nested body) is checked.
_OFF_LOOP_BYTES = 256 * 1024

_SHUTTING_DOWN = error_answer(
    503, "kafka_unavailable", "the runner is shutting down; retry", (("Retry-After", "1"),)
)


class KafkaUpstreamPlugin(Plugin):
    """Conf name ``kafkaupstream``; owns the producer pool of this runner process."""

    name = "kafkaupstream"

    def __init__(self, pool_factory: Callable[[], ProducerPool] = ProducerPool) -> None:
        self._pool_factory = pool_factory
        self._pool: ProducerPool | None = None

    @property
    def pool(self) -> ProducerPool:
        # Created on first use, never at import or construction: a forking runner must create
        # producers (and their threads) in the worker, after the fork.
        if self._pool is None:
            self._pool = self._pool_factory()
        return self._pool

    def prepare(self, value: str) -> RouteConfig | RouteConfigError:
        try:
            return parse_route_config(value)
        except RouteConfigError as exc:
            # The field and the reason only: the value may be a password.
            log.warning("event=route_config_invalid field=%s reason=%r", exc.field, exc.reason)
            return exc

    async def handle(self, state: Any, request: HTTPRequest) -> Answer:
        if isinstance(state, RouteConfigError):
            return config_invalid_answer(state.field, state.reason)
        config: RouteConfig = state
        try:
            routing = route_request(config, request.headers)
            body = await request.body()
            if len(body) > _OFF_LOOP_BYTES:
                record = await asyncio.to_thread(build_record, config, routing, body)
            else:
                record = build_record(config, routing, body)
        except RequestError as exc:
            log.debug("event=request_refused status=%d error=%s", exc.status, exc.code)
            return exc.answer()
        try:
            producer = self.pool.get_canonical(config.producer_config)
            outcome = await producer.produce(
                record, wait=config.sync, timeout=config.timeout_ms / 1000
            )
        except ProducerConfigError as exc:
            log.error("event=producer_refused cause=%r", str(exc))
            return config_invalid_answer("config", "librdkafka refused it (see the runner log)")
        except ProducerClosedError:
            return _SHUTTING_DOWN
        return outcome_answer(outcome, config.timeout_ms)

    async def close(self, timeout: float) -> None:
        if self._pool is not None:
            await self._pool.close(timeout)
