"""The compiled jsonkey against the JMESPath library it stands for: the same value, always.

Random JSON documents (parsed as a request body is, so long integers are ``IntegerText``) meet
random dotted paths, which take the direct lookup, and expressions that are not plain paths,
which take the interpreter; every result must equal ``jmespath.search`` on the same document.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jmespath
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafkaupstream.plugin.answers import RequestError
from kafkaupstream.plugin.config import parse_route_config
from kafkaupstream.plugin.jsonbody import parse
from kafkaupstream.plugin.jsonkey import JsonKey
from kafkaupstream.plugin.record import build_record, route_request
from kafkaupstream.protocol import TextEntry
from tests.unit.fuzzing import fuzz

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Few names, so that random paths often find something in random documents.
NAMES = st.one_of(
    st.sampled_from(["a", "b", "id", "user", "_x", "A1", "x-y", "0", "é", "", 'q"t', "b\\s"]),
    st.text(max_size=4),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**20, max_value=10**30),  # IntegerText once parsed
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(NAMES, inner, max_size=5)),
    max_leaves=25,
)
#: Expressions that are not plain dotted paths: each must take the interpreter.
GENERAL = [
    "@",
    "a[0]",
    "a[*].b",
    "a.b[0]",
    "a.*",
    "*.a",
    "a | b",
    "a.b | c",
    "a || b",
    "a && b",
    "!a",
    "a.[b, id]",
    "a.{k: b}",
    "[a, b]",
    "length(a)",
    "abs(a)",
    "a[?b]",
    "`1`",
    "'a'",
    "a == b",
    "a[].b",
    "user.id || id",
]


def _document(value: Any) -> Any:
    """``value`` as a request body's parse gives it."""
    return parse(json.dumps(value).encode())


def _expression(names: list[str], quote: list[bool]) -> str:
    """The dotted path of ``names``; a name that is not an identifier is always quoted."""
    parts = [
        name if _IDENTIFIER.match(name) and not quoted else json.dumps(name)
        for name, quoted in zip(names, quote, strict=False)
    ]
    return ".".join(parts)


@fuzz(600)
@given(
    value=JSON_VALUES,
    names=st.lists(NAMES, min_size=1, max_size=4),
    quote=st.lists(st.booleans(), min_size=4, max_size=4),
    data=st.data(),
)
def test_a_dotted_path_is_a_direct_lookup_with_jmespath_results(
    value: Any, names: list[str], quote: list[bool], data: st.DataObject
) -> None:
    # Half the time the path is taken from the document, so that it finds something.
    if isinstance(value, dict) and value and data.draw(st.booleans()):
        names = [data.draw(st.sampled_from(sorted(value))), *names[1:]]
    expression = _expression(names, quote)
    document = _document(value)
    key = JsonKey(expression)
    assert key.path == tuple(names)
    found = key.search(document)
    expected = jmespath.search(expression, document)
    assert found == expected
    assert type(found) is type(expected)


@fuzz(600)
@given(value=JSON_VALUES, expression=st.sampled_from(GENERAL))
def test_other_expressions_take_the_interpreter_with_jmespath_results(
    value: Any, expression: str
) -> None:
    document = _document(value)
    key = JsonKey(expression)
    assert key.path is None
    try:
        expected = jmespath.search(expression, document)
    except jmespath.exceptions.JMESPathError as error:
        with pytest.raises(type(error)):
            key.search(document)
        return
    found = key.search(document)
    assert found == expected
    assert type(found) is type(expected)


@fuzz(200)
@given(value=JSON_VALUES)
def test_one_compiled_key_serves_many_documents(value: Any) -> None:
    """The interpreter kept per route carries nothing from one request to the next."""
    key = JsonKey("a[?b] || a.*")
    for document in (_document(value), _document({"a": {"x": 1}}), _document(value)):
        assert key.search(document) == jmespath.search("a[?b] || a.*", document)


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (b'{"user": {"id": 7}}', b"7"),
        (b'{"user": [{"id": 7}]}', None),  # a dotted path does not index an array
        (b'{"user": "id"}', None),  # nor a string
        (b'{"user": null}', None),
        (b'{"user": {"ID": 7}}', None),  # names are case-sensitive
        (b'[{"user": {"id": 7}}]', None),
    ],
)
def test_a_dotted_jsonkey_finds_its_value_or_refuses_with_422(
    body: bytes, found: bytes | None
) -> None:
    config = parse_route_config(
        json.dumps({"config": {"bootstrap.servers": "b:9092"}, "topic": "t", "jsonkey": "user.id"})
    )
    routing = route_request(config, (TextEntry("content-type", "application/json"),))
    if found is not None:
        assert build_record(config, routing, body).key == found
        return
    with pytest.raises(RequestError) as info:
        build_record(config, routing, body)
    assert (info.value.status, info.value.code) == (422, "key_not_found")


def test_a_quoted_name_is_a_plain_path_too() -> None:
    key = JsonKey('"user-id"."a.b"')
    assert key.path == ("user-id", "a.b")
    assert key.search({"user-id": {"a.b": "k"}}) == "k"
