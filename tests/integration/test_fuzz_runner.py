"""Fuzzing the real runner process over its socket: frames, then whole requests to Kafka.

Frames: every hostile stream gets, per request, its proper reply or an RPC_ERROR, then an
RPC_ERROR (type 0, the documented code) if the bytes broke the protocol, then a close; never a
hang, never a Traceback, and the runner keeps serving other connections.

Requests: fake APISIX -> runner -> Tansu. Each answer must be what the plugin's own pure functions
predict for the same headers and body (the documented error, or 200), and each 200's record must
be in the broker with exactly the predicted key, headers and compacted value.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.broker import EmbeddedBroker
from harness.fake_apisix import ClientRequest, FakeApisix, HTTPAnswer, PluginConf, lua_headers
from harness.hostile import exchange_raw, expected_replies, good_exchange
from harness.runner_process import RunnerProcess
from kafkaupstream.plugin.answers import RequestError
from kafkaupstream.plugin.config import RouteConfig, parse_route_config
from kafkaupstream.plugin.record import route_request
from kafkaupstream.producers import KafkaRecord
from kafkaupstream.protocol import (
    ErrorResponse,
    MessageType,
    TextEntry,
    decode_runner_message,
)
from tests.unit.fuzzing import fuzz
from tests.unit.test_fuzz_frames import hostile_streams, valid_frames
from tests.unit.test_fuzz_requests import (
    DOCUMENTED,
    bodies,
    body_pool,
    header_pool,
    headers,
    outcome,
)

from .conftest import ReadRecords

# --- frames --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frame_runner() -> Iterator[RunnerProcess]:
    # Two workers and no test plugins: a PrepareConf crosses to the parent's token store.
    with RunnerProcess(workers=2) as proc:
        yield proc


def assert_healthy(proc: RunnerProcess, workers: list[int]) -> None:
    """After a batch: a good exchange is answered, no worker died, nothing logged a Traceback."""
    assert good_exchange(proc.socket_path) < 2.0
    assert proc.worker_pids() == workers, "a worker died and was restarted"
    logs = proc.logs()
    assert "Traceback" not in logs and "Task exception" not in logs, logs[-4000:]


def assert_answered_as_owed(path: str, stream: bytes) -> None:
    owed = expected_replies(stream)
    result = exchange_raw(path, stream)
    assert result.ending in ("eof", "reset"), f"runner did not close: {result.ending}"
    assert not result.trailing, "the runner sent a truncated frame"
    frames = result.frames
    answers = frames[: len(owed.requests)]
    assert len(answers) == len(owed.requests), (owed, frames)
    for allowed, (frame_type, payload) in zip(owed.allowed_reply_types(), answers, strict=True):
        assert frame_type in allowed
        decode_runner_message(frame_type, payload)
    rest = frames[len(owed.requests) :]
    if owed.error is None:
        assert rest == []
    else:
        assert len(rest) == 1, (owed.reason, rest)
        frame_type, payload = rest[0]
        assert frame_type == MessageType.RPC_ERROR
        assert decode_runner_message(frame_type, payload) == ErrorResponse(owed.error)


@pytest.mark.parametrize(
    ("streams", "cases"),
    [
        pytest.param(hostile_streams, 700, id="hostile-streams"),
        pytest.param(
            st.lists(valid_frames, min_size=2, max_size=8).map(b"".join),
            300,
            id="valid-conversations",
        ),
    ],
)
def test_streams_get_their_answers_or_an_rpc_error_then_a_close(
    frame_runner: RunnerProcess, streams: st.SearchStrategy[bytes], cases: int
) -> None:
    workers = frame_runner.worker_pids()
    sizes: list[int] = []

    @fuzz(cases)
    @given(stream=streams)
    def batch(stream: bytes) -> None:
        sizes.append(len(stream))
        assert_answered_as_owed(frame_runner.socket_path, stream)

    batch()
    print(f"\n{len(sizes)} streams, {sum(sizes)} bytes")
    assert_healthy(frame_runner, workers)


# --- requests through to Kafka ----------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka_runner() -> Iterator[RunnerProcess]:
    with RunnerProcess(workers=2) as proc:
        yield proc


@pytest.fixture(scope="module")
def topics(broker: EmbeddedBroker) -> dict[str, str]:
    names = {"main": "fz-main", "other": "fz-other", "forbidden": "fz-forbidden"}
    broker.create_topics({"fz-main": 3, "fz-other": 1, "fz-forbidden": 1})
    return names


def route_values(bootstrap: str, topics: dict[str, str]) -> list[str]:
    base = {"bootstrap.servers": bootstrap, "linger.ms": 0}
    routes: list[dict[str, Any]] = [
        {"topic": topics["main"], "jsonkey": "user.id", "forward_headers": ["x-*"]},
        {
            "topic": topics["main"],
            "headerprefix": "cool-",
            "allowed_topics": ["fz-oth*"],
            "key": "static-key",
            "forward_headers": ["*"],
            "max_body_bytes": 4096,
        },
        {"allowed_topics": [topics["other"]], "jsonkey": "abs(id)", "partition": 0},
    ]
    return [json.dumps({"config": base, **route}) for route in routes]


class Sent:
    """What the fuzzed requests should have left in the broker, collected across examples."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, int, int], KafkaRecord] = {}
        self.answers: Counter[tuple[int, str]] = Counter()


JSON = TextEntry("Content-Type", "application/json")
#: Topic headers naming the broker's topics, allowed or not, on top of the generic headers.
TOPIC_HEADERS = [
    TextEntry(name, topic)
    for name in ("topic", "cool-topic", "Topic")
    for topic in ("fz-main", "fz-other", "fz-forbidden", "fz-oth")
]


def send(path: str, value: str, entries: tuple[TextEntry, ...], body: bytes) -> HTTPAnswer:
    async def scenario() -> HTTPAnswer:
        async with FakeApisix(path) as apisix:
            client = ClientRequest(
                "POST",
                "/kafkaupstream",
                headers=tuple((e.name, e.value) for e in entries),  # type: ignore[misc]
                body=body,
            )
            conf = PluginConf(conf=(("kafkaupstream", value),), conf_id=str(hash(value)))
            return await apisix.request(conf, client)

    return asyncio.run(scenario())


#: librdkafka's default ``message.max.bytes``: the routes above keep it.
MESSAGE_MAX_BYTES = 1_000_000


def record_size(record: KafkaRecord) -> int:
    headers = sum(len(name.encode()) + len(value) for name, value in record.headers)
    return len(record.value or b"") + len(record.key or b"") + headers


request_cases = st.tuples(
    st.integers(0, 2),
    st.tuples(
        st.sampled_from([(), (JSON,), (JSON,)]),
        st.lists(st.sampled_from(TOPIC_HEADERS), max_size=2),
        st.one_of(headers, st.lists(st.sampled_from(header_pool()), max_size=3).map(tuple)),
    ).map(lambda parts: (*parts[0], *parts[1], *parts[2])),
    # Mostly bodies that can be produced, so that enough 200s are checked in the broker.
    st.one_of(st.sampled_from(body_pool()), st.sampled_from(body_pool()), bodies),
)


def header_topic_absent(
    config: RouteConfig, entries: tuple[TextEntry, ...], existing: set[str]
) -> bool:
    """Whether the headers choose a topic other than the route's that the broker lacks."""
    try:
        routing = route_request(config, entries)
    except RequestError:
        return False
    return routing.topic != config.topic and routing.topic not in existing


def check_answer(
    sent: Sent,
    topics: dict[str, str],
    config: RouteConfig,
    entries: tuple[TextEntry, ...],
    body: bytes,
    answer: HTTPAnswer,
) -> None:
    """The answer is what the plugin's pure functions predict; a 200's record is remembered."""
    assert answer.action == "stop", answer
    assert answer.header("Content-Type") == "application/json", answer
    parsed = json.loads(answer.body)
    sent.answers[(answer.status, parsed.get("error", ""))] += 1
    # What the runner saw: the first 100 headers, names lower-cased, in Lua hash order.
    seen = lua_headers([(e.name, e.value) for e in entries])  # type: ignore[misc]
    if header_topic_absent(config, seen, set(topics.values())):
        # Refused before the body is fetched: no client creates a topic ("fz-oth" never exists).
        assert (answer.status, parsed["error"]) == (404, "unknown_topic_or_partition")
        return
    predicted = outcome(config, seen, body)
    if isinstance(predicted, RequestError):
        assert (answer.status, parsed["error"]) == (predicted.status, predicted.code)
        assert (predicted.status, predicted.code) in DOCUMENTED
        return
    partitions = 3 if predicted.topic == topics["main"] else 1
    if predicted.partition >= partitions:
        assert (answer.status, parsed["error"]) == (404, "unknown_topic_or_partition")
        return
    size = record_size(predicted)
    if size > MESSAGE_MAX_BYTES or (size > MESSAGE_MAX_BYTES - 1000 and answer.status == 413):
        # librdkafka's limit counts the key, the headers and some framing too.
        assert (answer.status, parsed["error"]) == (413, "body_too_large")
        return
    assert answer.status == 200, parsed
    assert parsed["topic"] == predicted.topic
    assert predicted.partition in (-1, parsed["partition"])
    sent.records[(parsed["topic"], parsed["partition"], parsed["offset"])] = predicted


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
def test_fuzzed_requests_get_the_predicted_answer_and_every_200_is_in_the_broker(
    kafka_runner: RunnerProcess,
    broker: EmbeddedBroker,
    topics: dict[str, str],
    read_records: ReadRecords,
) -> None:
    sent = Sent()
    values = route_values(broker.bootstrap, topics)
    configs = [parse_route_config(value) for value in values]

    @fuzz(300)
    @given(case=request_cases)
    def batch(case: tuple[int, tuple[TextEntry, ...], bytes]) -> None:
        route, entries, body = case
        answer = send(kafka_runner.socket_path, values[route], entries, body)
        check_answer(sent, topics, configs[route], entries, body, answer)

    batch()
    print(f"\nanswers by (status, error): {dict(sorted(sent.answers.items()))}")
    assert sum(sent.answers.values()) >= 300
    assert len(sent.records) >= 25, "too few 200s to say anything about the records"
    for name in ("main", "other"):
        topic = topics[name]
        wanted = {k: v for k, v in sent.records.items() if k[0] == topic}
        found = {
            (r.topic, r.partition, r.offset): r
            for r in read_records(topic, expected=len(wanted), timeout=15)
        }
        assert set(found) == set(wanted), f"{topic}: records differ from the 200s"
        for where, record in wanted.items():
            got = found[where]
            assert (got.key, got.value) == (record.key, record.value), where
            assert got.headers == record.headers, where
    # The topic no route allows: refused with 403 every time, so never written.
    assert read_records(topics["forbidden"], timeout=2) == []


# --- secrets in the runner's own log and answers ------------------------------------------------

secrets = st.text(
    st.characters(codec="utf-8", exclude_characters='"\\'), min_size=9, max_size=24
).map(lambda s: f"S3cr{s}")


def test_generated_secrets_never_reach_the_runners_log_or_answers(
    kafka_runner: RunnerProcess, broker: EmbeddedBroker, topics: dict[str, str]
) -> None:
    used: list[str] = []

    @fuzz(25)
    @given(
        name=st.sampled_from(["sasl.password", "sasl.oauthbearer.client.secret", "ssl.key.pem"]),
        secret=secrets,
        broken=st.booleans(),
    )
    def batch(name: str, secret: str, broken: bool) -> None:
        used.append(secret)
        config: dict[str, Any] = {
            "bootstrap.servers": broker.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "u",
            name: secret,
        }
        if broken:
            config["acks"] = secret  # a refused value next to the secret one
        value = json.dumps({"config": config, "topic": topics["main"], "delivery": "async"})
        answer = send(kafka_runner.socket_path, value, (JSON,), b'{"n": 1}')
        assert answer.header("Content-Type") == "application/json"
        assert answer.status in (202, 500), answer.body
        assert secret.encode() not in answer.body

    batch()
    time.sleep(1.0)  # librdkafka's background connection and authentication errors
    logs = kafka_runner.logs()
    print(f"\nsecrets: {len(used)} cases, log of {len(logs)} characters checked")
    assert "route_config_invalid" in logs
    for secret in used:
        assert secret not in logs
