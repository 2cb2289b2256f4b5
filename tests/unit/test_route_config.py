"""The route configuration model: names, types, defaults, librdkafka validation, no secret leaks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kafkaupstream.plugin.config import RouteConfigError, describe, parse_route_config

BOOT = {"bootstrap.servers": "127.0.0.1:9092"}


def conf(**fields: Any) -> str:
    fields.setdefault("config", BOOT)
    return json.dumps(fields)


def error_of(value: str) -> RouteConfigError:
    with pytest.raises(RouteConfigError) as info:
        parse_route_config(value)
    return info.value


def test_minimal_config_gets_the_documented_defaults() -> None:
    config = parse_route_config(conf(topic="events"))
    assert config.producer_config == (
        ("bootstrap.servers", "127.0.0.1:9092"),
        ("enable.idempotence", "true"),
    )
    assert config.topic == "events"
    assert config.partition == -1
    assert config.key is None
    assert config.jsonkey is None
    assert config.headerprefix == ""
    assert config.delivery == "sync" and config.sync
    assert config.timeout_ms == 5000
    assert config.allowed_topics == ()
    assert config.forward_headers == ()
    assert config.max_body_bytes == 1_048_576
    assert (config.topic_header, config.partition_header, config.key_header) == (
        "topic",
        "partition",
        "key",
    )


def test_field_names_are_case_insensitive_like_the_original() -> None:
    value = json.dumps(
        {
            "Config": BOOT,
            "TOPIC": "events",
            "Partition": 2,
            "Key": "k",
            "JsonKey": "user.id",
            "HeaderPrefix": "Cool-",
            "Delivery": "ASYNC",
            "Timeout_MS": 100,
        }
    )
    config = parse_route_config(value)
    assert config.topic == "events"
    assert config.partition == 2
    assert config.key == b"k"
    assert config.jsonkey_source == "user.id"
    assert config.headerprefix == "cool-"
    assert config.topic_header == "cool-topic"
    assert config.delivery == "async" and not config.sync
    assert config.timeout_ms == 100


def test_unknown_field_is_an_error_that_names_it() -> None:
    error = error_of(conf(topic="t", partiton=1))
    assert error.field == "partiton"
    assert "unknown field" in error.reason


def test_a_field_given_twice_in_different_case_is_an_error() -> None:
    error = error_of('{"config": {"bootstrap.servers": "b:9092"}, "topic": "a", "Topic": "b"}')
    assert error.field == "topic"
    assert "more than once" in error.reason


def test_null_means_not_given() -> None:
    config = parse_route_config(conf(topic="t", partition=None, key=None, jsonkey=None))
    assert (config.partition, config.key, config.jsonkey) == (-1, None, None)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("", "value"),
        ("   ", "value"),
        ("not json", "value"),
        ("[1, 2]", "value"),
        ('"a string"', "value"),
        ('{"topic": "t"}', "config"),
        ('{"config": [], "topic": "t"}', "config"),
        ('{"config": "bootstrap.servers=x", "topic": "t"}', "config"),
        ('{"config": {"acks": "all"}, "topic": "t"}', "config.bootstrap.servers"),
    ],
)
def test_unusable_values_and_configs_are_refused(value: str, field: str) -> None:
    assert error_of(value).field == field


def test_nested_config_objects_are_flattened_to_dotted_properties() -> None:
    nested = parse_route_config(
        conf(topic="t", config={"bootstrap": {"servers": "b:9092"}, "linger": {"ms": 5}})
    )
    dotted = parse_route_config(
        conf(topic="t", config={"linger.ms": "5", "bootstrap.servers": "b:9092"})
    )
    assert nested.producer_config == dotted.producer_config
    assert nested.producer_config == (
        ("bootstrap.servers", "b:9092"),
        ("enable.idempotence", "true"),
        ("linger.ms", "5"),
    )


def test_same_property_nested_and_dotted_is_an_error() -> None:
    error = error_of(conf(topic="t", config={**BOOT, "linger.ms": 1, "linger": {"ms": 2}}))
    assert error.field == "config"
    assert "linger.ms" in error.reason


def test_duplicate_property_in_config_is_an_error() -> None:
    value = '{"config": {"bootstrap.servers": "a:1", "bootstrap.servers": "b:1"}, "topic": "t"}'
    assert error_of(value).field == "config.bootstrap.servers"


def test_unknown_librdkafka_property_is_named() -> None:
    error = error_of(conf(topic="t", config={**BOOT, "no.such.thing": "1"}))
    assert error.field == "config.no.such.thing"
    assert "no such property" in error.reason


def test_invalid_value_names_the_alias_the_user_wrote_never_the_value() -> None:
    error = error_of(conf(topic="t", config={**BOOT, "acks": "sometimes"}))
    assert error.field == "config.acks"
    assert "sometimes" not in str(error)


def test_array_or_null_property_value_is_refused_naming_the_property() -> None:
    error = error_of(conf(topic="t", config={**BOOT, "acks": ["all"]}))
    assert "acks" in str(error)


SECRET = "hunter2-Very-Secret"


@pytest.mark.parametrize(
    "config",
    [
        {**BOOT, "sasl.password": SECRET, "security.protocol": "bogus"},
        {**BOOT, "sasl.password": SECRET, "no.such.property": SECRET},
        {**BOOT, "ssl.key.password": SECRET, "security.protocol": "SSL", "ssl.key.location": "/no"},
        {**BOOT, "sasl.oauthbearer.client.secret": SECRET, "acks": SECRET},
    ],
)
def test_config_errors_never_contain_secret_values(config: dict[str, str]) -> None:
    error = error_of(conf(topic="t", config=config))
    assert SECRET not in str(error)
    assert SECRET not in error.field


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("partition", "1"),
        ("partition", 1.5),
        ("partition", True),
        ("partition", -2),
        ("partition", 2**31),
        ("timeout_ms", 0),
        ("timeout_ms", 60_000),
        ("timeout_ms", "5000"),
        ("max_body_bytes", 0),
        ("max_body_bytes", 16_777_189),
        ("key", 5),
        ("topic", 5),
        ("topic", "has space"),
        ("topic", "x" * 250),
        ("topic", ".."),
        ("jsonkey", ""),
        ("jsonkey", "a..b"),
        ("jsonkey", "user-id"),
        ("headerprefix", "bad prefix"),
        ("delivery", "maybe"),
        ("allowed_topics", "t2"),
        ("allowed_topics", ["ok", ""]),
        ("forward_headers", [1]),
    ],
)
def test_wrong_types_and_ranges_name_the_field(field: str, raw: Any) -> None:
    error = error_of(conf(**{"topic": "t", field: raw}))
    assert error.field == field


def test_partition_minus_one_and_zero_are_fine() -> None:
    assert parse_route_config(conf(topic="t", partition=-1)).partition == -1
    assert parse_route_config(conf(topic="t", partition=0)).partition == 0


def test_topic_is_required_unless_headers_may_choose_one() -> None:
    assert error_of(conf()).field == "topic"
    config = parse_route_config(conf(allowed_topics=["events.*"]))
    assert config.topic is None


def test_gjson_style_dotted_path_is_a_valid_jmespath() -> None:
    config = parse_route_config(conf(topic="t", jsonkey="glossary.GlossDiv.title"))
    assert config.jsonkey is not None
    assert config.jsonkey.search({"glossary": {"GlossDiv": {"title": "S"}}}) == "S"


def test_forward_headers_globs_are_case_insensitive() -> None:
    config = parse_route_config(conf(topic="t", forward_headers=["X-Trace-*", "user-agent"]))
    assert config.forwards("x-trace-id")
    assert config.forwards("user-agent")
    assert not config.forwards("x-other")


def test_a_glob_never_forwards_credentials_but_an_exact_name_does() -> None:
    globbed = parse_route_config(conf(topic="t", forward_headers=["*"]))
    assert globbed.forwards("x-request-id")
    for name in ("authorization", "cookie", "apikey", "x-api-key", "proxy-authorization"):
        assert not globbed.forwards(name)
    exact = parse_route_config(conf(topic="t", forward_headers=["Authorization"]))
    assert exact.forwards("authorization")


def test_describe_redacts_secrets_and_shows_effective_headers() -> None:
    config = parse_route_config(
        conf(
            topic="t",
            headerprefix="cool-",
            config={**BOOT, "sasl.username": "user", "sasl.password": SECRET},
        )
    )
    text = json.dumps(describe(config))
    assert SECRET not in text
    described = describe(config)
    assert described["config"]["sasl.password"] == "***"
    assert described["config"]["sasl.username"] == "user"
    assert described["headers"] == {
        "topic": "cool-topic",
        "partition": "cool-partition",
        "key": "cool-key",
    }


def test_sync_routes_get_an_idempotent_producer_by_default() -> None:
    properties = dict(parse_route_config(conf(topic="t")).producer_config)
    assert properties["enable.idempotence"] == "true"


@pytest.mark.parametrize(
    "config",
    [
        {**BOOT, "enable.idempotence": False},
        {**BOOT, "acks": 1},
        {**BOOT, "request.required.acks": "0"},
        {**BOOT, "max.in.flight": 10},
        {**BOOT, "retries": 0},
    ],
)
def test_the_idempotence_default_yields_to_what_the_user_chose(config: dict[str, Any]) -> None:
    properties = dict(parse_route_config(conf(topic="t", config=config)).producer_config)
    assert properties.get("enable.idempotence", "false") == "false"


def test_async_routes_keep_librdkafkas_default() -> None:
    properties = dict(parse_route_config(conf(topic="t", delivery="async")).producer_config)
    assert "enable.idempotence" not in properties


def test_a_batch_route_cannot_be_spooled() -> None:
    value = {"config": {"bootstrap.servers": "k:9092"}, "topic": "t", "batch": "ndjson"}
    with pytest.raises(RouteConfigError) as refused:
        parse_route_config(json.dumps({**value, "delivery": "spool"}))
    assert refused.value.field == "delivery" and "batch" in refused.value.reason
    assert parse_route_config(json.dumps({**value, "delivery": "async"})).batch == "ndjson"
