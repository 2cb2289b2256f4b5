"""Route schemas as pure functions: compiling (what is refused and why), violations, answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kafkaupstream.plugin.answers import RequestError
from kafkaupstream.plugin.config import RouteConfigError, describe, parse_route_config
from kafkaupstream.plugin.record import route_request
from kafkaupstream.plugin.schema import (
    MAX_POINTER_CHARS,
    SchemaError,
    Violation,
    compile_schema,
    pointer,
    violations,
)
from kafkaupstream.plugin.schema_cost import MAX_CHECKS_PER_VALUE, MAX_VALIDATION_WORK
from kafkaupstream.protocol import TextEntry

from .test_precedence import record, refusal

JSON = ("content-type", "application/json")
USER = {
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "name": {"type": "string", "pattern": "^[a-z]+$"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}


def route(**fields: Any) -> Any:
    fields.setdefault("config", {"bootstrap.servers": "127.0.0.1:9092"})
    fields.setdefault("topic", "events")
    return parse_route_config(json.dumps(fields))


def config_error(**fields: Any) -> RouteConfigError:
    with pytest.raises(RouteConfigError) as info:
        route(**fields)
    return info.value


# --- compiling ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "https://schemas.example.com/user.json"},
        {"$ref": "file:///etc/passwd"},
        {"properties": {"a": {"$ref": "user.json"}}},
        {"$id": "https://schemas.example.com/root", "$ref": "user.json"},
        {"$schema": "https://schemas.example.com/meta"},
    ],
)
def test_references_outside_the_schema_are_refused_never_fetched(schema: Any) -> None:
    error = config_error(schema=schema)
    assert error.field == "schema"
    assert "nothing is fetched" in error.reason
    assert "example.com" not in error.reason and "passwd" not in error.reason


def test_references_inside_the_schema_resolve() -> None:
    compiled = compile_schema({"$defs": {"id": {"type": "integer"}}, "$ref": "#/$defs/id"})
    assert violations(compiled, 5) == ()
    assert violations(compiled, "5") == (Violation("", "type"),)


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"properties": {"a": {"pattern": "(a)\\1"}}}, "/properties/a/pattern"),
        ({"properties": {"a": {"pattern": "^(?=x)secret"}}}, "/properties/a/pattern"),
        ({"patternProperties": {"(?<!x)secret": {}}}, "/patternProperties"),
        ({"pattern": "("}, "/pattern"),
    ],
)
def test_patterns_that_need_backtracking_are_configuration_errors(schema: Any, where: str) -> None:
    error = config_error(schema=schema)
    assert error.field == "schema"
    assert f"at {where} " in error.reason and "linear-time" in error.reason
    assert "secret" not in error.reason


def test_an_invalid_schema_names_the_place_but_not_the_value() -> None:
    error = config_error(schema={"properties": {"age": {"type": "integr"}}})
    assert error.field == "schema"
    assert "/properties/age/type" in error.reason
    assert "integr" not in error.reason


@pytest.mark.parametrize("schema", [5, "string", [], {"type": 5}])
def test_a_schema_must_be_an_object_or_boolean(schema: Any) -> None:
    assert config_error(schema=schema).field == "schema"


def test_a_duplicate_key_in_the_schema_is_an_error() -> None:
    value = '{"config": {"bootstrap.servers": "k:9092"}, "topic": "t", ' + (
        '"schema": {"properties": {"a": {"type": "string", "type": "integer"}}}}'
    )
    with pytest.raises(RouteConfigError) as info:
        parse_route_config(value)
    assert info.value.field == "schema"
    assert "/properties/a/type is given more than once" in info.value.reason


def test_the_draft_comes_from_dollar_schema_and_defaults_to_2020_12() -> None:
    assert compile_schema({}).draft == "2020-12"
    assert compile_schema({"$schema": "http://json-schema.org/draft-07/schema#"}).draft == (
        "draft-07"
    )
    assert compile_schema({"$schema": "http://json-schema.org/draft-04/schema#"}).draft == (
        "draft-04"
    )


def test_format_is_an_annotation_for_every_draft() -> None:
    for draft in ("http://json-schema.org/draft-07/schema#", None):
        schema: dict[str, Any] = {"format": "email"}
        if draft:
            schema["$schema"] = draft
        assert violations(compile_schema(schema), "not an email") == ()


def test_describe_shows_the_schema_as_given() -> None:
    effective = describe(route(schema=USER))
    assert effective["schema"] == USER
    assert effective["schema_draft"] == "2020-12"
    assert describe(route())["schema"] is None


# --- violations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"id": 0}, Violation("/id", "minimum")),
        ({"id": 1, "name": "Ada"}, Violation("/name", "pattern")),
        ({"id": 1, "tags": ["ok", 7]}, Violation("/tags/1", "type")),
    ],
)
def test_violations_name_the_pointer_and_the_keyword(record: Any, expected: Violation) -> None:
    assert violations(compile_schema(USER), record) == (expected,)


def test_a_valid_record_has_no_violations() -> None:
    assert violations(compile_schema(USER), {"id": 1, "name": "ada", "tags": []}) == ()


def test_a_missing_property_is_reported_at_its_object() -> None:
    assert violations(compile_schema(USER), {}) == (Violation("", "required"),)


def test_only_the_first_violation_is_reported_however_many_there_are() -> None:
    compiled = compile_schema({"type": "array", "items": {"type": "string"}})
    assert violations(compiled, list(range(1_000_000))) == (Violation("/0", "type"),)
    assert violations(compile_schema(USER), {"id": 0, "name": "Ada"}) in (
        (Violation("/id", "minimum"),),
        (Violation("/name", "pattern"),),
    )


def test_pointers_escape_tilde_and_slash() -> None:
    assert pointer(["a/b", "c~d", 3]) == "/a~1b/c~0d/3"


def test_a_long_pointer_is_cut() -> None:
    cut = pointer(["k" * 10_000])
    assert len(cut) == MAX_POINTER_CHARS and cut.endswith("...")


def test_integers_beyond_64_bits_validate_as_integers() -> None:
    compiled = compile_schema({"type": "integer", "minimum": 0})
    assert violations(compiled, 10**400) == ()
    assert violations(compiled, -(10**400)) == (Violation("", "minimum"),)


def test_deeply_nested_records_are_validated() -> None:
    deep: Any = 1
    for _ in range(10_000):
        deep = [deep]
    compiled = compile_schema({"type": "array", "items": {"type": "array"}})
    assert violations(compiled, deep) == ()
    assert violations(compiled, [deep, 1]) == (Violation("/1", "type"),)


# --- the bound on validation time -------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        {"items": {"$ref": "#"}},
        {"oneOf": [{"items": {"$ref": "#"}}, {"items": {"$ref": "#"}}]},
        {
            "$defs": {"n": {"properties": {"kids": {"items": {"$ref": "#/$defs/n"}}}}},
            "$ref": "#/$defs/n",
        },
        {
            "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}},
            "$ref": "#/$defs/a",
        },
        {"$id": "https://s.example/root", "properties": {"x": {"$ref": "https://s.example/root"}}},
    ],
)
def test_recursive_schemas_are_refused(schema: Any) -> None:
    error = config_error(schema=schema)
    assert error.field == "schema" and "recurses" in error.reason


def test_dynamic_references_are_refused() -> None:
    error = config_error(schema={"$dynamicAnchor": "n", "items": {"$dynamicRef": "#n"}})
    assert "$dynamicRef" in error.reason


def test_a_schema_that_multiplies_its_checks_is_refused_and_the_bound_is_reported() -> None:
    def doubling(levels: int) -> dict[str, Any]:
        defs: dict[str, Any] = {
            f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
            for i in range(levels)
        }
        defs[f"d{levels}"] = {"type": "integer"}
        return {"$defs": defs, "$ref": "#/$defs/d0"}

    # d5 is 1 check; each d_i is itself, two $ref wrappers and twice d_i+1; the root adds one.
    assert compile_schema(doubling(5)).checks_per_value == 1 + (2 ** (5 + 2) - 3)
    error = config_error(schema=doubling(12))
    assert f"more than {MAX_CHECKS_PER_VALUE} subschemas" in error.reason


def test_references_shared_without_recursion_are_fine() -> None:
    schema = {
        "$defs": {"id": {"type": "integer", "minimum": 1}},
        "properties": {"a": {"$ref": "#/$defs/id"}, "b": {"items": {"$ref": "#/$defs/id"}}},
    }
    compiled = compile_schema(schema)
    assert compiled.checks_per_value == 2  # the $ref wrapper and its target
    assert violations(compiled, {"a": 1, "b": [2, 0]}) == (Violation("/b/1", "minimum"),)


def test_properties_of_one_object_count_once_per_value() -> None:
    wide = {"properties": {f"p{i}": {"type": "string"} for i in range(5_000)}}
    assert compile_schema(wide).checks_per_value == 1
    overlapping = {"patternProperties": {f"^p{i}": {} for i in range(1_001)}}
    assert "more than" in config_error(schema=overlapping).reason


# --- requests on a schema route ----------------------------------------------------------------


def test_a_valid_body_is_produced_exactly_as_without_a_schema() -> None:
    body = b'{ "id" : 1.50e1, "name": "ada",\n "tags": ["\\u00e9"] }'
    with_schema = record(route(schema={"properties": {"id": {"type": "number"}}}), body, JSON)
    assert with_schema.value == record(route(), body, JSON).value
    assert with_schema.value == b'{"id":1.50e1,"name":"ada","tags":["\\u00e9"]}'


def test_a_violation_is_422_with_pointer_and_keyword_never_schema_values() -> None:
    error = refusal(route(schema=USER), b'{"id": 1, "name": "Ada"}', JSON)
    assert (error.status, error.code) == (422, "schema_violation")
    body = json.loads(error.answer().body)
    assert body["error"] == "schema_violation"
    assert body["violations"] == [{"pointer": "/name", "keyword": "pattern"}]
    assert "record" not in body
    assert "/name: pattern" in body["message"]
    assert "^[a-z]+$" not in error.answer().body.decode()


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_schema_route_refuses_bodies_that_are_not_json_with_415(
    content_type: str | None,
) -> None:
    headers = () if content_type is None else (("content-type", content_type),)
    entries = tuple(TextEntry(name, value) for name, value in headers)
    with pytest.raises(RequestError) as info:  # from the headers alone, before the body
        route_request(route(schema=USER), entries)
    assert (info.value.status, info.value.code) == (415, "unsupported_media_type")


def test_a_schema_route_accepts_json_subtypes() -> None:
    config = route(schema=USER)
    produced = record(config, b'{"id": 3}', ("content-type", "application/vnd.user+json"))
    assert produced.value == b'{"id":3}'


def test_invalid_json_is_still_400_on_a_schema_route() -> None:
    assert refusal(route(schema=USER), b'{"id": ', JSON).code == "invalid_json"


def test_jsonkey_and_schema_share_one_parse_and_agree() -> None:
    config = route(schema=USER, jsonkey="id")
    assert record(config, b'{"id": 42}', JSON).key == b"42"
    assert refusal(config, b'{"id": -1}', JSON).code == "schema_violation"


def test_a_false_schema_refuses_every_record() -> None:
    error = refusal(route(schema=False), b"{}", JSON)
    assert json.loads(error.answer().body)["violations"] == [
        {"pointer": "", "keyword": "falseSchema"}
    ]


def test_schema_errors_raise_schema_error_directly() -> None:
    with pytest.raises(SchemaError):
        compile_schema({"type": "nope"})


def test_a_batch_record_that_breaks_the_schema_is_named_by_its_index() -> None:
    from kafkaupstream.plugin.batch import build_batch

    config = route(schema=USER, batch="ndjson")
    routing = route_request(config, (TextEntry("content-type", "application/x-ndjson"),))
    body = b'{"id": 1}\n{"id": 2}\n{"id": 0}\n'
    with pytest.raises(RequestError) as info:
        build_batch(config, routing, body)
    answer = json.loads(info.value.answer().body)
    assert (answer["error"], answer["record"]) == ("schema_violation", 2)
    assert answer["violations"] == [{"pointer": "/id", "keyword": "minimum"}]
    assert [r.value for r in build_batch(config, routing, body[:20])] == [b'{"id":1}', b'{"id":2}']


def test_max_body_bytes_times_checks_per_value_is_bounded() -> None:
    branches = [{"type": "integer", "minimum": 0} for _ in range(31)]
    schema = {"type": "array", "items": {"allOf": branches}}  # 32 subschemas per item
    error = config_error(schema=schema)  # with the default max_body_bytes, 1 MiB
    assert error.field == "schema"
    limit = MAX_VALIDATION_WORK // 32
    assert f"lower max_body_bytes to {limit} or less" in error.reason
    assert route(schema=schema, max_body_bytes=limit).schema is not None


def test_strings_that_are_not_unicode_are_validated_as_go_reads_them_and_kept() -> None:
    schema = {
        "properties": {"s": {"type": "string", "maxLength": 2, "pattern": "^a"}},
        "propertyNames": {"pattern": "^[a-z\ufffd]+$"},
    }
    config = route(schema=schema)
    body = b'{"s": "a\xff", "\xfe": 1, "t": "\\ud800"}'  # invalid UTF-8, a lone surrogate
    assert record(config, body, JSON).value == b'{"s":"a\xff","\xfe":1,"t":"\\ud800"}'
    too_long = refusal(config, b'{"s": "a\xff\xfe"}', JSON)  # three characters, as in Go
    assert json.loads(too_long.answer().body)["violations"] == [
        {"pointer": "/s", "keyword": "maxLength"}
    ]
    assert refusal(config, b'{"s": "\\udc00"}', JSON).code == "schema_violation"


def test_a_violation_too_deep_for_the_library_to_describe_is_still_refused() -> None:
    deep = "[" * 300 + '"x"' + "]" * 300
    error = refusal(route(schema={"type": "object"}), deep.encode(), JSON)
    assert json.loads(error.answer().body)["violations"] == [{"pointer": "", "keyword": "unknown"}]
    shallow = refusal(route(schema={"items": {"type": "object"}}), f"[{deep}]".encode(), JSON)
    assert json.loads(shallow.answer().body)["violations"] == [
        {"pointer": "", "keyword": "unknown"}
    ]
    fine = record(route(schema={"type": "array"}), deep.encode(), JSON)
    assert fine.value == deep.encode()
