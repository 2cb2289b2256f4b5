"""The plugin's request path without a broker: mockafka's in-memory producer stands in for Kafka.

mockafka never delivers reports, so only what does not wait for one is tested here (async
delivery, refusals before producing); sync delivery is tested against Tansu in integration.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from mockafka import FakeProducer
from mockafka.kafka_store import KafkaStore

from kafkaupstream.api import HTTPRequest
from kafkaupstream.plugin import KafkaUpstreamPlugin
from kafkaupstream.producers import ProducerPool
from kafkaupstream.protocol import Method, TextEntry


class MockafkaProducer(FakeProducer):  # type: ignore[misc]
    """mockafka's producer with the parts of confluent-kafka's API the pool relies on."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.config = config

    def poll(self, timeout: float | None = None) -> int:
        time.sleep(timeout or 0)  # a real poll() blocks; returning at once would spin
        return 0

    def flush(self, timeout: float | None = None) -> int:
        return 0

    def purge(self, *args: Any, **kwargs: Any) -> None:
        return None

    def close(self) -> None:
        return None

    def __len__(self) -> int:
        return 0


class Requests:
    """Counts ExtraInfo round trips, which is what the plugin costs APISIX per request."""

    def __init__(self) -> None:
        self.body_fetches = 0

    def make(self, body: bytes, *headers: tuple[str, str]) -> HTTPRequest:
        async def fetch_body() -> bytes | None:
            self.body_fetches += 1
            return body or None

        async def fetch_var(name: str) -> bytes | None:
            return None

        return HTTPRequest(
            id=1,
            method=Method.POST,
            path="/kafkaupstream",
            src_ip=b"\x7f\x00\x00\x01",
            args=(),
            headers=tuple(TextEntry(n, v) for n, v in headers),
            fetch_body=fetch_body,
            fetch_var=fetch_var,
        )


def plugin_and_topic(**fields: Any) -> tuple[KafkaUpstreamPlugin, Any, str]:
    topic = f"mock-{uuid.uuid4().hex[:10]}"
    KafkaStore().create_partition(topic=topic, partitions=2)
    plugin = KafkaUpstreamPlugin(pool_factory=lambda: ProducerPool(factory=MockafkaProducer))
    value = {"config": {"bootstrap.servers": "unused:9092"}, "topic": topic, **fields}
    return plugin, plugin.prepare(json.dumps(value)), topic


def handle(plugin: KafkaUpstreamPlugin, state: Any, request: HTTPRequest) -> Any:
    async def scenario() -> Any:
        try:
            return await plugin.handle(state, request)
        finally:
            await plugin.close(0.5)

    return asyncio.run(scenario())


def test_async_request_is_queued_with_key_partition_headers_and_compacted_value() -> None:
    plugin, state, topic = plugin_and_topic(
        delivery="async", partition=1, jsonkey="order.id", forward_headers=["x-trace"]
    )
    request = Requests().make(
        b'{ "order" : { "id" : "o-9" } }',
        ("content-type", "application/json"),
        ("x-trace", "t-1"),
        ("accept", "*/*"),
    )
    answer = handle(plugin, state, request)
    assert answer.status == 202
    assert json.loads(answer.body) == {"topic": topic, "status": "queued"}
    [message] = KafkaStore().get_messages_in_partition(topic, 1)
    assert message.value() == b'{"order":{"id":"o-9"}}'
    assert message.key() == b"o-9"
    assert message.headers() == [("x-trace", b"t-1")]


def test_a_refused_header_costs_no_body_round_trip() -> None:
    plugin, state, topic = plugin_and_topic(delivery="async", partition=0)
    requests = Requests()
    answer = handle(plugin, state, requests.make(b"{}", ("topic", "elsewhere")))
    assert answer.status == 403
    assert requests.body_fetches == 0
    assert KafkaStore().get_messages_in_partition(topic, 0) == []


def test_invalid_route_answers_500_for_every_request_without_fetching_the_body() -> None:
    plugin = KafkaUpstreamPlugin(pool_factory=lambda: ProducerPool(factory=MockafkaProducer))
    state = plugin.prepare('{"config": {"bootstrap.servers": "b:1"}, "topic": "t", "jsonKee": "a"}')
    requests = Requests()
    answer = handle(plugin, state, requests.make(b"{}"))
    assert answer.status == 500
    assert json.loads(answer.body)["error"] == "route_config_invalid"
    assert "jsonKee" in json.loads(answer.body)["message"]
    assert requests.body_fetches == 0


def test_the_pool_is_created_on_first_use_not_with_the_plugin() -> None:
    made: list[ProducerPool] = []

    def factory() -> ProducerPool:
        made.append(ProducerPool(factory=MockafkaProducer))
        return made[-1]

    plugin = KafkaUpstreamPlugin(pool_factory=factory)
    state = plugin.prepare(json.dumps({"config": {"bootstrap.servers": "b:1"}, "topic": "t"}))
    assert made == []
    handle(plugin, state, Requests().make(b""))  # refused (empty body): still no producer needed
    assert made == []


def test_async_batch_queues_every_record_in_order_and_answers_the_count() -> None:
    plugin, state, topic = plugin_and_topic(
        delivery="async", partition=0, batch="ndjson", jsonkey="id", forward_headers=["x-trace"]
    )
    body = b'{ "id" : "a" }\n\n{"id": "b", "n": [ 1 ]}\n'
    request = Requests().make(body, ("content-type", "application/x-ndjson"), ("x-trace", "t"))
    answer = handle(plugin, state, request)
    assert (answer.status, json.loads(answer.body)) == (
        202,
        {"topic": topic, "queued": 2, "failed": 0},
    )
    messages = KafkaStore().get_messages_in_partition(topic, 0)
    assert [(m.key(), m.value()) for m in messages] == [
        (b"a", b'{"id":"a"}'),
        (b"b", b'{"id":"b","n":[1]}'),
    ]
    assert {tuple(m.headers()) for m in messages} == {(("x-trace", b"t"),)}


def test_a_batch_with_a_wrong_content_type_costs_no_body_round_trip() -> None:
    plugin, state, topic = plugin_and_topic(delivery="async", partition=0, batch="json-array")
    requests = Requests()
    answer = handle(plugin, state, requests.make(b"[1]", ("content-type", "text/plain")))
    assert answer.status == 415
    assert requests.body_fetches == 0
    refused = handle(
        plugin, state, requests.make(b'[1, {"a": }]', ("content-type", "application/json"))
    )
    assert (refused.status, json.loads(refused.body)["record"]) == (400, 1)
    assert KafkaStore().get_messages_in_partition(topic, 0) == []
