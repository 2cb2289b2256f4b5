"""Fuzzing route configurations: any conf value is a RouteConfig or a RouteConfigError.

The plugin's ``prepare()`` must never raise (one bad route must not break a PrepareConf), and no
error, log line or ``check-config`` output may echo a value stored under a secret-looking
property (``*password*``, ``*secret*``, ``*token*``, ...).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kafkaupstream.check_config import check
from kafkaupstream.plugin.answers import route_config_invalid
from kafkaupstream.plugin.config import _FIELD_NAMES, RouteConfig, RouteConfigError
from kafkaupstream.plugin.kafka_plugin import KafkaUpstreamPlugin
from kafkaupstream.producers import is_secret
from tests.unit.fuzzing import fuzz

FIELDS = list(_FIELD_NAMES)
PROPERTIES = [
    "bootstrap.servers",
    "metadata.broker.list",
    "acks",
    "linger.ms",
    "enable.idempotence",
    "compression.type",
    "security.protocol",
    "sasl.mechanism",
    "sasl.username",
    "message.timeout.ms",
    "retries",
    "max.in.flight",
    "queue.buffering.max.messages",
    "client.id",
    "debug",
    "logger",
    "on_delivery",
]
#: librdkafka's own secret properties; generated names add the markers anywhere in a name.
SECRET_PROPERTIES = [
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.token.endpoint.url",
]
MARKERS = ["password", "secret", "token", "Password", "SECRET", "passphrase"]


def _recase(name: str, mask: int) -> str:
    return "".join(c.upper() if mask >> (i % 16) & 1 else c for i, c in enumerate(name))


field_names = st.one_of(
    st.sampled_from(FIELDS),
    st.builds(_recase, st.sampled_from(FIELDS), st.integers(0, 0xFFFF)),
    st.sampled_from(["partiton", "jsonKee", "", "config.bootstrap.servers"]),
    st.text(max_size=8),
)
secret_names = st.one_of(
    st.sampled_from(SECRET_PROPERTIES),
    st.builds(
        lambda pre, marker, post: f"{pre}{marker}{post}",
        st.sampled_from(["", "sasl.", "ssl.", "x."]),
        st.sampled_from(MARKERS),
        st.sampled_from(["", ".x", "_2"]),
    ),
)
property_names = st.one_of(st.sampled_from(PROPERTIES), secret_names, st.text(max_size=6))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.one_of(field_names, property_names), inner, max_size=3)
    ),
    max_leaves=6,
)
#: Per field, values close to what it takes (so that parsing gets past it), or anything at all.
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "topic": st.sampled_from(["events", "a.b-c_9", "", ".", "..", "x" * 250, "bad topic"]),
    "partition": st.sampled_from([-2, -1, 0, 7, 2**31 - 1, 2**31, 1.0, "3"]),
    "key": st.sampled_from(["k", "", "\udcff", "\ud800"]),
    "jsonkey": st.sampled_from(["user.id", "a[0]", '"user-id".name', "abs(n)", "a.", "", "`1`"]),
    "headerprefix": st.sampled_from(["", "cool-", "X-", "bad prefix", "a\n", "é"]),
    "delivery": st.sampled_from(["sync", "ASYNC", "later"]),
    "timeout_ms": st.sampled_from([0, 1, 5000, 55000, 55001, "5"]),
    "allowed_topics": st.sampled_from([[], ["*"], ["orders-*", "audit"], [""], "*"]),
    "forward_headers": st.sampled_from([[], ["x-*"], ["[z-a]", "[!", "\\"], ["*"], [1]]),
    "max_body_bytes": st.sampled_from([0, 1, 16777188, 16777189, True]),
}
PROPERTY_VALUES = st.one_of(
    scalars,
    st.sampled_from(["127.0.0.1:9092", "all", "0", "-1", "1", "gzip", "SASL_SSL", "PLAIN", "all,"]),
)
producer_configs = st.dictionaries(property_names, PROPERTY_VALUES | json_values, max_size=4).map(
    lambda c: {"bootstrap.servers": "127.0.0.1:9092", **c}
)


@st.composite
def config_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A conf value as a JSON object, its fields close enough to the real ones to get deep."""
    fields: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(sorted(PLAUSIBLE)), max_size=5, unique=True)):
        fields[name] = draw(
            PLAUSIBLE[name] | json_values if draw(st.booleans()) else PLAUSIBLE[name]
        )
    if draw(st.integers(0, 9)):
        fields["config"] = draw(producer_configs)
    if not draw(st.integers(0, 4)):
        fields[draw(field_names)] = draw(json_values)
    return fields


VALID = [
    {"config": {"bootstrap.servers": "kafka:9092"}, "topic": "events"},
    {
        "config": {"bootstrap.servers": "kafka:9092", "acks": 1, "linger.ms": "5"},
        "topic": "events",
        "partition": 2,
        "key": "k",
        "headerprefix": "cool-",
        "delivery": "async",
        "forward_headers": ["x-*", "authorization"],
    },
    {
        "config": {
            "bootstrap.servers": "kafka:9092",
            # SASL_SSL would cost an OpenSSL context (~9 ms) per case; the SASL secrets are
            # checked the same without it.
            "security.protocol": "SASL_PLAINTEXT",
            "sasl": {"mechanism": "PLAIN", "username": "u", "password": "hunter2-hunter2"},
        },
        "allowed_topics": ["orders-*", "audit"],
        "jsonkey": "user.id",
        "timeout_ms": 55000,
        "max_body_bytes": 16777188,
    },
    {"CONFIG": {"metadata.broker.list": "a:1,b:2"}, "Topic": "t", "jsonKey": '"user-id".name'},
]


@st.composite
def mutated_texts(draw: st.DrawFn) -> str:
    """A valid conf value's JSON text with a few characters deleted, replaced or inserted."""
    text = json.dumps(draw(st.sampled_from(VALID)), indent=draw(st.sampled_from([None, 1])))
    chars = list(text)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(chars) - 1))
        how = draw(st.sampled_from(["delete", "replace", "insert"]))
        new = draw(st.sampled_from([*'{}[]",:0-9 eE.\\nul', "\\u0000", "\udcff", "é"]))
        if how == "delete":
            del chars[at]
        elif how == "replace":
            chars[at] = new
        else:
            chars.insert(at, new)
    return "".join(chars)


@st.composite
def mutated_objects(draw: st.DrawFn) -> str:
    """A valid conf value with one field (or producer property) replaced by any JSON value."""
    config = json.loads(json.dumps(draw(st.sampled_from(VALID))))
    target = config
    if draw(st.booleans()):
        target = next(v for k, v in config.items() if k.lower() == "config")
    name = draw(st.sampled_from([*target, *FIELDS, *PROPERTIES]))
    target[name] = draw(json_values)
    return json.dumps(config)


conf_values = st.one_of(
    config_objects().map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=40),
    st.builds(
        lambda n, s: s * n, st.sampled_from([2000, 100_000]), st.sampled_from(["[", '{"a":'])
    ),
    mutated_texts(),
    mutated_objects(),
)


@contextlib.contextmanager
def captured_logs() -> Iterator[list[str]]:
    """Every line the ``kafkaupstream`` loggers emit, with exception texts, while inside."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("kafkaupstream")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def secrets_in(value: Any) -> set[str]:
    """Strings over 8 characters under a secret-looking property, that appear nowhere else."""
    secret: set[str] = set()
    other: set[str] = set()

    def walk(node: Any, under_secret: bool) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                other.add(key)
                walk(child, under_secret or is_secret(key))
        elif isinstance(node, list):
            for child in node:
                walk(child, under_secret)
        elif isinstance(node, str):
            (secret if under_secret else other).add(node)

    walk(value, False)
    return {s for s in secret if len(s) > 8 and not any(s in o for o in other)}


def check_config_output(value: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check(value, connect=False, timeout=1.0, out=out, err=err)
    return code, out.getvalue() + err.getvalue()


def prepared(value: str) -> tuple[RouteConfig | RouteConfigError, list[str]]:
    """``prepare(value)`` as the runner calls it: it must not raise, whatever ``value`` is."""
    with captured_logs() as lines:
        state = KafkaUpstreamPlugin().prepare(value)
    assert isinstance(state, RouteConfig | RouteConfigError), type(state)
    return state, lines


def printed_texts(value: str) -> list[str]:
    """Everything the runner and check-config would show for this conf value."""
    state, lines = prepared(value)
    code, printed = check_config_output(value)
    texts = [*lines, printed]
    if isinstance(state, RouteConfigError):
        assert code == 1
        answer = route_config_invalid(state.field, state.reason)
        texts += [str(state), state.field, state.reason, answer.body.decode()]
    else:
        assert code == 0, printed
    return texts


def replaced(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {key: replaced(child, old, new) for key, child in node.items()}
    if isinstance(node, list):
        return [replaced(child, old, new) for child in node]
    return new if node == old else node


def assert_no_secret_leaks(value: str) -> None:
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        return  # not JSON: nothing sits under a property
    texts = printed_texts(value)
    for secret in secrets_in(parsed):
        if not any(secret in text for text in texts):
            continue
        # Seen: leaked, or a word of our own messages that hypothesis (which mines string
        # constants from the code under test) happened to draw. A marker in its place tells.
        marker = "Zq" + hashlib.sha1(secret.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        again = printed_texts(json.dumps(replaced(parsed, secret, marker)))
        assert not any(marker in text for text in again), f"{secret!r} leaked"


@fuzz(1300)
@given(value=conf_values)
def test_any_conf_value_is_a_route_config_or_a_route_config_error(value: str) -> None:
    # prepare() is parse_route_config() plus one log line for a RouteConfigError; any other
    # exception escapes it, and so fails here.
    state, lines = prepared(value)
    if isinstance(state, RouteConfigError):
        assert state.reason  # the field may be "": an unknown field named by the empty string
        assert str(state) == f"{state.field}: {state.reason}"
        assert len(lines) == 1 and "event=route_config_invalid" in lines[0]
    else:
        assert state.topic is not None or state.allowed_topics
        assert not lines


@fuzz(700)
@given(value=st.one_of(config_objects().map(json.dumps), mutated_objects()))
def test_no_value_under_a_secret_property_is_ever_echoed(value: str) -> None:
    assert_no_secret_leaks(value)


secret_values = (
    st.text(min_size=9, max_size=40)
    .map(lambda s: f"S3cr{s}")
    .filter(lambda s: "\\" not in s and '"' not in s)
)


@fuzz(700)
@given(
    base=st.sampled_from(VALID),
    placements=st.lists(
        st.tuples(secret_names, secret_values, st.booleans()), min_size=1, max_size=4
    ),
    breakage=st.sampled_from([None, "topic", "partition", "config.acks", "jsonkey"]),
)
def test_generated_secrets_under_every_secret_property_stay_redacted(
    base: dict[str, Any],
    placements: list[tuple[str, str, bool]],
    breakage: str | None,
) -> None:
    value = json.loads(json.dumps(base))
    config = next(v for k, v in value.items() if k.lower() == "config")
    for name, secret, nested in placements:
        if nested and "." in name:
            head, _, tail = name.partition(".")
            group = config.setdefault(head, {})
            if isinstance(group, dict):
                group[tail] = secret
                continue
        config[name] = secret
    if breakage == "config.acks":
        config["acks"] = "sometimes"
    elif breakage is not None:
        value[breakage] = ["not", "valid"]
    assert_no_secret_leaks(json.dumps(value))
