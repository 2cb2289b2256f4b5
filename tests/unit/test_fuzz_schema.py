"""Fuzzed route schemas: any JSON value is compiled or refused with SchemaError, never crashes.

Schemas are built from the keywords the cost walk follows (references, combinators, embedded
``$id``) and from values meant to confuse them (relative URIs, patterns that backtrack); every
schema that compiles then validates arbitrary records with at most one violation.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kafkaupstream.plugin.schema import SchemaError, compile_schema, violations

from .fuzzing import fuzz

_KEYWORDS = st.sampled_from(
    [
        "type", "properties", "items", "$ref", "allOf", "anyOf", "oneOf", "not", "pattern",
        "patternProperties", "additionalProperties", "required", "enum", "const", "minimum",
        "$defs", "definitions", "$id", "id", "$schema", "prefixItems", "contains", "if", "then",
        "else", "dependentSchemas", "dependencies", "unevaluatedProperties", "propertyNames",
        "format", "$anchor", "$dynamicRef", "minLength", "uniqueItems",
    ]
)  # fmt: skip
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False),
    st.sampled_from(
        [
            "string", "integer", "object", "array", "#", "#/$defs/a", "#/properties/a", "#a",
            "a.json", "../b", "urn:x", "http://127.0.0.1:1/s", "file:///etc/hosts", "^a+$",
            "(a+)+$", "(?=x)", "\\1", "email", "\ud800", "a\udcff",
        ]
    ),
)  # fmt: skip
_JSON = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(_KEYWORDS, st.text(max_size=3)), inner, max_size=5),
    ),
    max_leaves=30,
)


@fuzz(1500)
@given(_JSON, _JSON)
def test_any_schema_compiles_or_is_refused_and_validates_with_one_violation_at_most(
    schema: Any, record: Any
) -> None:
    try:
        compiled = compile_schema(schema)
    except SchemaError as exc:
        assert str(exc)
        return
    assert 1 <= compiled.checks_per_value <= 1_000
    assert len(violations(compiled, record)) <= 1
