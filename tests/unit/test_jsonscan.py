"""The compiled core's JSON scan against the reference (``jsonbody``'s Go-exact validation).

``scan`` may only say "valid" for a body the reference accepts, must say it for every body the
reference accepts, and ``compact`` must give the reference's bytes either way. Under ``make
test`` the scan is the compiled extension; under ``KAFKAUPSTREAM_NO_EXTENSIONS=1`` its source.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from kafkaupstream.plugin import _jsonscan, jsonbody
from kafkaupstream.plugin._jsonscan import (
    COMPACT_BY_SPLIT,
    COMPACT_BY_TRANSLATE,
    UNSURE,
    scan,
    strip,
)

from .fuzzing import fuzz


def reference(data: bytes) -> bytes | None:
    """The compact form by the reference alone (None: invalid)."""
    try:
        jsonbody._decode(data, jsonbody._VALIDATE)
    except jsonbody.InvalidJSON:
        return None
    return jsonbody._strip_whitespace(data)


def check(data: bytes) -> int:
    verdict = scan(data)
    expected = reference(data)
    assert (verdict != UNSURE) == (expected is not None), (data[:80], verdict)
    if expected is None:
        return verdict
    if verdict == COMPACT_BY_TRANSLATE:
        assert data.translate(None, b" \t\n\r") == expected
    assert strip(data) == expected
    assert jsonbody.compact(data) == expected
    return verdict


def test_edges_of_the_grammar() -> None:
    valid = [b"0", b"-0", b"1.5e+3", b"-1E-7", b'"\\u00e9\\ud800"', b'"\xff\xfe"', b"[]", b"{}"]
    valid += [b' { "a" : [ 1 , true , false , null ] } ', b'"a b"', b"[" * 10_000 + b"]" * 10_000]
    invalid = [b"", b" ", b"-", b"01", b"1.", b".5", b"1e", b"1e+", b"+1", b"[1,]", b'{"a":1,}']
    invalid += [b'{"a" 1}', b"{1:2}", b'"\\u12g4"', b'"\\x"', b'"a\x01"', b'"a\tb"', b"tru"]
    invalid += [b"NaN", b"-Infinity", b"1 2", b"\xef\xbb\xbf{}", b"[" * 10_001 + b"]" * 10_001]
    invalid += [b'"open', b"[1", b'{"a":', b"nulll", b"[}", b"{]"]
    for data in valid:
        assert check(data) != UNSURE, data[:40]
    for data in invalid:
        assert check(data) == UNSURE, data[:40]
    assert check(b'{"a b": 1}') == COMPACT_BY_SPLIT
    assert _jsonscan.MAX_DEPTH == jsonbody.MAX_DEPTH


_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(), inner)),
    max_leaves=12,
)


@st.composite
def texts(draw: st.DrawFn) -> str:
    """JSON as clients write it: any indent, spaces around separators, sometimes non-ASCII."""
    value = draw(_VALUES)
    text = json.dumps(
        value,
        indent=draw(st.sampled_from([None, 0, 2, "\t"])),
        separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])),
        ensure_ascii=draw(st.booleans()),
    )
    return draw(st.sampled_from(["", " ", "\r\n"])) + text + draw(st.sampled_from(["", "\n"]))


@fuzz(400)
@given(texts())
def test_valid_texts(data: str) -> None:
    assert check(data.encode("utf-8", "surrogatepass")) != UNSURE


@fuzz(600)
@given(texts(), st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=2)), max_size=3))
def test_texts_with_bytes_changed(text: str, edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(text.encode("utf-8", "surrogatepass"))
    for at, replacement in edits:
        at %= len(data) + 1
        data[at : at + len(replacement) % 2] = replacement
    check(bytes(data))


@fuzz(300)
@given(st.binary(max_size=24))
def test_any_bytes(data: bytes) -> None:
    check(data)
