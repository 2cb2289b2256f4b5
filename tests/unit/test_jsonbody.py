"""JSON bodies are validated and compacted byte for byte like Go's ``encoding/json.Compact``.

The oracle is ``go_compact``: a line-by-line port of Go 1.22's ``encoding/json/scanner.go`` and
``appendCompact(dst, src, escape=false)``, slow but obviously faithful.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafkaupstream.plugin import jsonbody
from kafkaupstream.plugin.jsonbody import (
    CHEAP_INT_DIGITS,
    MAX_DEPTH,
    IntegerText,
    InvalidJSON,
    compact,
    is_json_content_type,
    parse,
)

# --------------------------------------------------------------------------------------------
# Oracle: Go's scanner, transliterated (state functions return the scan code).

CONTINUE, BEGIN_LITERAL, BEGIN_OBJECT, OBJECT_KEY, OBJECT_VALUE, END_OBJECT = range(6)
BEGIN_ARRAY, ARRAY_VALUE, END_ARRAY, SKIP_SPACE, END, ERROR = range(6, 12)
PARSE_OBJECT_KEY, PARSE_OBJECT_VALUE, PARSE_ARRAY_VALUE = range(3)
HEX = set(b"0123456789abcdefABCDEF")
DIGITS = set(b"0123456789")


class GoScanner:
    def __init__(self) -> None:
        self.step: Callable[[int], int] = self.begin_value
        self.parse_state: list[int] = []
        self.err = False
        self.end_top = False

    def eof(self) -> int:
        if self.err:
            return ERROR
        if self.end_top:
            return END
        self.step(ord(" "))
        if self.end_top:
            return END
        self.err = True
        return ERROR

    def error(self) -> int:
        self.step = lambda c: ERROR
        self.err = True
        return ERROR

    def push(self, state: int, success: int) -> int:
        self.parse_state.append(state)
        return success if len(self.parse_state) <= 10000 else self.error()

    def pop(self) -> None:
        self.parse_state.pop()
        if self.parse_state:
            self.step = self.end_value
        else:
            self.step, self.end_top = self.end_top_state, True

    @staticmethod
    def space(c: int) -> bool:
        return c in b" \t\r\n"

    def begin_value_or_empty(self, c: int) -> int:
        if self.space(c):
            return SKIP_SPACE
        if c == ord("]"):
            return self.end_value(c)
        return self.begin_value(c)

    def begin_value(self, c: int) -> int:
        if self.space(c):
            return SKIP_SPACE
        ch = chr(c)
        if ch == "{":
            self.step = self.begin_string_or_empty
            return self.push(PARSE_OBJECT_KEY, BEGIN_OBJECT)
        if ch == "[":
            self.step = self.begin_value_or_empty
            return self.push(PARSE_ARRAY_VALUE, BEGIN_ARRAY)
        literal = {
            '"': self.in_string,
            "-": self.neg,
            "0": self.zero,
            "t": self.word("rue"),
            "f": self.word("alse"),
            "n": self.word("ull"),
        }
        if ch in literal:
            self.step = literal[ch]
            return BEGIN_LITERAL
        if "1" <= ch <= "9":
            self.step = self.one
            return BEGIN_LITERAL
        return self.error()

    def begin_string_or_empty(self, c: int) -> int:
        if self.space(c):
            return SKIP_SPACE
        if c == ord("}"):
            self.parse_state[-1] = PARSE_OBJECT_VALUE
            return self.end_value(c)
        return self.begin_string(c)

    def begin_string(self, c: int) -> int:
        if self.space(c):
            return SKIP_SPACE
        if c == ord('"'):
            self.step = self.in_string
            return BEGIN_LITERAL
        return self.error()

    def end_value(self, c: int) -> int:
        if not self.parse_state:
            self.step, self.end_top = self.end_top_state, True
            return self.end_top_state(c)
        if self.space(c):
            self.step = self.end_value
            return SKIP_SPACE
        ps, ch = self.parse_state[-1], chr(c)
        if ps == PARSE_OBJECT_KEY and ch == ":":
            self.parse_state[-1], self.step = PARSE_OBJECT_VALUE, self.begin_value
            return OBJECT_KEY
        if ps == PARSE_OBJECT_VALUE and ch == ",":
            self.parse_state[-1], self.step = PARSE_OBJECT_KEY, self.begin_string
            return OBJECT_VALUE
        if ps == PARSE_OBJECT_VALUE and ch == "}":
            self.pop()
            return END_OBJECT
        if ps == PARSE_ARRAY_VALUE and ch == ",":
            self.step = self.begin_value
            return ARRAY_VALUE
        if ps == PARSE_ARRAY_VALUE and ch == "]":
            self.pop()
            return END_ARRAY
        return self.error()

    def end_top_state(self, c: int) -> int:
        if not self.space(c):
            self.error()  # Go returns scanEnd here and fails on the next byte or at eof
        return END

    def in_string(self, c: int) -> int:
        if c == ord('"'):
            self.step = self.end_value
        elif c == ord("\\"):
            self.step = self.in_string_esc
        elif c < 0x20:
            return self.error()
        return CONTINUE

    def in_string_esc(self, c: int) -> int:
        if c in b'bfnrt\\/"':
            self.step = self.in_string
            return CONTINUE
        if c == ord("u"):
            self.step = self.hex_digits(4)
            return CONTINUE
        return self.error()

    def hex_digits(self, left: int) -> Callable[[int], int]:
        def step(c: int) -> int:
            if c not in HEX:
                return self.error()
            self.step = self.in_string if left == 1 else self.hex_digits(left - 1)
            return CONTINUE

        return step

    def word(self, rest: str) -> Callable[[int], int]:
        def step(c: int) -> int:
            if c != ord(rest[0]):
                return self.error()
            self.step = self.end_value if len(rest) == 1 else self.word(rest[1:])
            return CONTINUE

        return step

    def neg(self, c: int) -> int:
        if c == ord("0"):
            self.step = self.zero
            return CONTINUE
        if c in DIGITS:
            self.step = self.one
            return CONTINUE
        return self.error()

    def one(self, c: int) -> int:
        if c in DIGITS:
            return CONTINUE
        return self.zero(c)

    def zero(self, c: int) -> int:
        if c == ord("."):
            self.step = self.dot
            return CONTINUE
        if c in b"eE":
            self.step = self.exp
            return CONTINUE
        return self.end_value(c)

    def dot(self, c: int) -> int:
        if c in DIGITS:
            self.step = self.dot0
            return CONTINUE
        return self.error()

    def dot0(self, c: int) -> int:
        if c in DIGITS:
            return CONTINUE
        if c in b"eE":
            self.step = self.exp
            return CONTINUE
        return self.end_value(c)

    def exp(self, c: int) -> int:
        if c in b"+-":
            self.step = self.exp_sign
            return CONTINUE
        return self.exp_sign(c)

    def exp_sign(self, c: int) -> int:
        if c in DIGITS:
            self.step = self.exp0
            return CONTINUE
        return self.error()

    def exp0(self, c: int) -> int:
        if c in DIGITS:
            return CONTINUE
        return self.end_value(c)


def go_compact(src: bytes) -> bytes | None:
    """Go's appendCompact with escape=false; None where Go returns an error."""
    scan, dst, start = GoScanner(), bytearray(), 0
    for i, c in enumerate(src):
        v = scan.step(c)
        if v >= SKIP_SPACE:
            if v == ERROR:
                break
            dst += src[start:i]
            start = i + 1
    if scan.eof() == ERROR:
        return None
    return bytes(dst + src[start:])


def ours(src: bytes) -> bytes | None:
    try:
        return compact(src)
    except InvalidJSON:
        return None


def nested(depth: int, inner: bytes = b"", ws: bytes = b"") -> bytes:
    return (b"[" + ws) * depth + inner + (ws + b"]") * depth


def nested_objects(depth: int, inner: bytes = b"1") -> bytes:
    return b'{"k": ' * depth + inner + b"}" * depth


def nested_mixed(depth: int) -> bytes:
    """Alternating arrays and objects, with a sibling at every level."""
    half = depth // 2
    return b'[0, {"k": ' * half + (b"[]" if depth % 2 else b"1") + b"}]" * half


@contextlib.contextmanager
def python_containers() -> Iterator[None]:
    """Make the iterative parser handle every container, as it does for over-deep bodies."""
    with (
        mock.patch.object(jsonbody, "_c_reach", lambda: MAX_DEPTH + 1),
        mock.patch.object(jsonbody, "_too_deep", lambda data: True),
    ):
        yield


# --------------------------------------------------------------------------------------------
# Corpora

VALID = {
    "whitespace_around_and_between": (b' \r\n\t{ "a" :\t1 } \n', b'{"a":1}'),
    "only_tabs_between_tokens": (b'{"a":\t[1,\t2]}', b'{"a":[1,2]}'),
    "only_newlines_between_tokens": (b'\n{"a":\n[1,\r\n2]}\n', b'{"a":[1,2]}'),
    "number_spelling_kept": (
        b"[1.50, 1e3, -0, 1E+2, 0.0e-0, -1.5E-10, 10, 1e999999]",
        b"[1.50,1e3,-0,1E+2,0.0e-0,-1.5E-10,10,1e999999]",
    ),
    "big_integer_kept": (
        b"[ 123456789012345678901234567890 ]",
        b"[123456789012345678901234567890]",
    ),
    "unicode_escape_kept": (b'[ "\\u00e9" ]', b'["\\u00e9"]'),
    "escaped_slash_kept": (b'[ "\\/" ]', b'["\\/"]'),
    "raw_utf8_kept": ('[ "é", "😀" ]'.encode(), '["é","😀"]'.encode()),
    "invalid_utf8_in_string_kept": (b'{"a":"\xff"}', b'{"a":"\xff"}'),
    "invalid_utf8_with_whitespace": (b'{ "a" : "\xff \xfe" }', b'{"a":"\xff \xfe"}'),
    "encoded_surrogate_bytes_kept": (b'[ "\xed\xa0\x80" ]', b'["\xed\xa0\x80"]'),
    "overlong_utf8_kept": (b'[ "\xc0\xaf" ]', b'["\xc0\xaf"]'),
    "duplicate_keys_kept": (b'{"a": 1, "a": 2}', b'{"a":1,"a":2}'),
    "key_order_kept": (b'{"b": 1, "a": 2, "c": 3}', b'{"b":1,"a":2,"c":3}'),
    "nested_with_whitespace_everywhere": (
        b' [ { "x" :\t[ 1 ,\n2 ] ,"y" : { } } , [ ] , { } , [ [ ] ] ]\r\n',
        b'[{"x":[1,2],"y":{}},[],{},[[]]]',
    ),
    "spaces_inside_strings_kept": (b'{ "a b" : "c  d " }', b'{"a b":"c  d "}'),
    "escaped_quote_and_backslash": (
        b'{ "a \\" b \\\\" : "x \\n y" }',
        b'{"a \\" b \\\\":"x \\n y"}',
    ),
    "escaped_backslash_ends_string": (
        b'[ "a\\\\" , "b\\\\\\" c" , "\\\\\\\\" , " \\\\ " ]',
        b'["a\\\\","b\\\\\\" c","\\\\\\\\"," \\\\ "]',
    ),
    "escaped_quote_unicode_kept": (b'[ "\\u0022 x" , 1 ]', b'["\\u0022 x",1]'),
    "all_simple_escapes": (b'[ "\\b\\f\\n\\r\\t\\"\\\\\\/" ]', b'["\\b\\f\\n\\r\\t\\"\\\\\\/"]'),
    "lone_surrogate_escapes_valid": (b'[ "\\ud800", "\\uDFFF", "\\ud800\\udc00" ]', None),
    "line_separators_not_escaped": ('[ "\u2028\u2029" ]'.encode(), '["\u2028\u2029"]'.encode()),
    "html_not_escaped": (b'[ "<a href=x>&amp;</a>" ]', b'["<a href=x>&amp;</a>"]'),
    "del_byte_in_string": (b'[ "\x7f" ]', b'["\x7f"]'),
    "brackets_inside_strings": (b'[ "[{" , "}]" , ":," ]', b'["[{","}]",":,"]'),
    "top_level_number": (b" 1 ", b"1"),
    "top_level_string": (b' " x " ', b'" x "'),
    "top_level_literals": (b"\ntrue", b"true"),
    "top_level_null": (b"null\n", b"null"),
    "top_level_negative_zero_float": (b"-0.0", b"-0.0"),
    "already_compact": (b'{"a":[1,2,{"b":null}],"c":"d"}', b'{"a":[1,2,{"b":null}],"c":"d"}'),
    "huge_integer": (b"[ " + b"7" * 5000 + b" ]", b"[" + b"7" * 5000 + b"]"),
    "deep_5000": (nested(5000, b" 1 ", b" "), nested(5000, b"1")),
    "deep_max_depth_arrays": (nested(MAX_DEPTH), nested(MAX_DEPTH)),
    "deep_max_depth_objects": (nested_objects(MAX_DEPTH), None),
    "deep_max_depth_with_empty_object": (nested(MAX_DEPTH - 1, b" {} "), nested(9999, b"{}")),
    "deep_mixed_max_depth": (nested_mixed(MAX_DEPTH), None),
    "deep_runs_with_whitespace": (nested(MAX_DEPTH - 1, b"[ ]", b" \n"), nested(9999, b"[]")),
    "deep_siblings": (
        b"[" + b" , ".join([nested(1500, b' "x , y" ', b" ")] * 3) + b"]",
        b"[" + b",".join([nested(1500, b'"x , y"')] * 3) + b"]",
    ),
}

INVALID = {
    "empty": b"",
    "whitespace_only": b" \t\n\r ",
    "bom": b"\xef\xbb\xbf{}",
    "nan": b"NaN",
    "nan_in_array": b"[1, NaN]",
    "infinity": b"[Infinity]",
    "negative_infinity": b"[-Infinity]",
    "lowercase_nan": b"nan",
    "leading_zero": b"01",
    "negative_leading_zero": b"[-01]",
    "plus_sign": b"+1",
    "leading_dot": b".5",
    "trailing_dot": b"1.",
    "dot_exponent": b"1.e3",
    "lone_minus": b"-",
    "minus_space": b"- 1",
    "bare_exponent": b"1e",
    "exponent_sign_only": b"1e+",
    "hex_number": b"0x10",
    "underscore_number": b"1_000",
    "non_ascii_digit": "[1\u0661]".encode(),
    "non_ascii_digit_alone": "\u0661".encode(),
    "trailing_comma_array": b"[1,]",
    "trailing_comma_object": b'{"a":1,}',
    "leading_comma": b"[,1]",
    "double_comma": b"[1,,2]",
    "missing_comma": b"[1 2]",
    "missing_colon": b'{"a" 1}',
    "missing_value": b'{"a"}',
    "object_missing_comma": b'{"a":1 "b":2}',
    "unquoted_key": b"{a:1}",
    "number_key": b"{1:1}",
    "single_quotes": b"{'a':1}",
    "line_comment": b"// c\n{}",
    "block_comment": b"{} /* c */",
    "nul_in_string": b'"a\x00b"',
    "newline_in_string": b'"a\nb"',
    "tab_in_string": b'"a\tb"',
    "unit_separator_in_string": b'"\x1f"',
    "invalid_escape": b'"\\x41"',
    "escaped_space": b'"\\ "',
    "escaped_single_quote": b'"\\\'"',
    "short_unicode_escape": b'"\\u12"',
    "non_hex_unicode_escape": b'"\\u12G4"',
    "uppercase_u_escape": b'"\\U0041"',
    "surrogate_then_bad_escape": b'"\\ud800\\u"',
    "trailing_value": b"{} {}",
    "trailing_garbage": b"1 x",
    "trailing_nul": b"[1]\x00",
    "extra_close": b"[1]]",
    "unterminated_string": b'"abc',
    "unclosed_array": b"[",
    "unclosed_array_value": b"[1",
    "unclosed_object": b'{"a":1',
    "close_only": b"]",
    "mismatched_close": b"[1}",
    "truncated_true": b"tru",
    "capital_true": b"True",
    "truncated_null": b"nul",
    "nbsp_is_not_whitespace": "\u00a01".encode(),
    "line_separator_is_not_whitespace": "\u20281".encode(),
    "form_feed_is_not_whitespace": b"\x0c1",
    "vertical_tab_is_not_whitespace": b"[1,\x0b2]",
    "invalid_utf8_outside_string": b"\xff",
    "invalid_utf8_after_value": b'"a"\xff',
    "depth_10001_arrays": nested(MAX_DEPTH + 1),
    "depth_10001_objects": nested_objects(MAX_DEPTH + 1),
    "depth_10001_by_empty_array": nested(MAX_DEPTH, b"[]"),
    "depth_10001_mixed": nested_mixed(MAX_DEPTH + 1),
    "depth_10001_with_whitespace": nested(MAX_DEPTH + 1, b"", b" "),
    "deep_unclosed": nested(5000)[:-1],
    "deep_trailing_comma": b"[" * 3000 + b"1,]" + b"]" * 2999,
    "deep_nan": nested(2000, b"NaN"),
    "deep_bad_key": b'{"k":' * 3000 + b"{1:2}" + b"}" * 3000,
}


@pytest.mark.parametrize(("src", "expected"), VALID.values(), ids=VALID.keys())
def test_valid_body_is_compacted_like_go(src: bytes, expected: bytes | None) -> None:
    assert compact(src) == go_compact(src)
    if expected is not None:
        assert compact(src) == expected
    with python_containers():
        assert compact(src) == go_compact(src)


@pytest.mark.parametrize("src", INVALID.values(), ids=INVALID.keys())
def test_invalid_body_is_rejected_like_go(src: bytes) -> None:
    assert go_compact(src) is None
    with pytest.raises(InvalidJSON):
        compact(src)
    with python_containers(), pytest.raises(InvalidJSON):
        compact(src)


@pytest.mark.parametrize("src", [s for s, _ in VALID.values()], ids=VALID.keys())
def test_parse_accepts_every_valid_body(src: bytes) -> None:
    parse(src)


@pytest.mark.parametrize("src", INVALID.values(), ids=INVALID.keys())
def test_parse_rejects_every_invalid_body(src: bytes) -> None:
    with pytest.raises(InvalidJSON):
        parse(src)


def megabyte_document() -> Any:
    return [
        {"id": i, "name": f"user {i}", "tags": ["a b", 'say "hi"', "c\\"], "score": i / 7}
        for i in range(12_000)
    ]


def test_one_mebibyte_document_is_compacted() -> None:
    doc = megabyte_document()
    pretty = json.dumps(doc, indent=2, ensure_ascii=False).encode()
    assert len(pretty) > 1 << 20
    assert compact(pretty) == json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    assert parse(pretty) == doc


def test_depth_limit_holds_when_c_scanner_recursion_is_unbounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Newer CPythons (or a raised recursion limit) let the C scanner nest deeper than Go allows.
    monkeypatch.setattr(jsonbody, "_c_reach", lambda: MAX_DEPTH + 1)
    assert compact(nested(MAX_DEPTH)) == nested(MAX_DEPTH)
    with pytest.raises(InvalidJSON, match="max depth"):
        compact(nested(MAX_DEPTH + 1))
    with pytest.raises(InvalidJSON, match="max depth"):
        parse(nested(MAX_DEPTH + 1))
    wide = b"[" + b",".join([b'{"a":[1],"b":"[[["}'] * 6000) + b"]"  # > MAX_DEPTH brackets
    assert compact(wide) == wide
    assert jsonbody._too_deep(wide) is False
    assert jsonbody._too_deep(b'["' + b"[" * 20000 + b'"]') is False
    assert jsonbody._too_deep(nested(MAX_DEPTH + 1)) is True


def test_depth_limit_holds_with_a_raised_recursion_limit() -> None:
    # The C scanner may then nest 3000 deep: it must not finish a spine past MAX_DEPTH.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(3000)
    try:
        assert compact(nested(MAX_DEPTH)) == nested(MAX_DEPTH)
        with pytest.raises(InvalidJSON, match="max depth"):
            compact(nested(MAX_DEPTH + 1))
        with pytest.raises(InvalidJSON, match="max depth"):
            parse(nested_objects(MAX_DEPTH + 1))
    finally:
        sys.setrecursionlimit(limit)


def test_deep_body_is_valid_when_called_near_the_recursion_limit() -> None:
    def frames() -> int:
        frame, count = sys._getframe(), 0
        while frame is not None:
            frame, count = frame.f_back, count + 1  # type: ignore[assignment]
        return count

    body = nested(300, b" 1 ", b" ")

    def descend(levels: int) -> bytes:
        return descend(levels - 1) if levels else compact(body)

    assert descend(sys.getrecursionlimit() - frames() - 40) == nested(300, b"1")


def test_error_says_where_and_why() -> None:
    with pytest.raises(InvalidJSON) as err:
        compact(b'{"a": [1,]}')
    assert err.value.offset == 9
    assert "byte 9" in str(err.value)
    assert "Expecting value" in str(err.value)


@pytest.mark.parametrize(
    ("src", "offset"),
    [
        (b"", 0),
        (b"[1 2]", 3),
        (b'{"a":1} x', 8),
        (b'"ab\x00"', 3),
        (b'["\xff\xff", x]', 7),
        ('["éé", x]'.encode(), 9),
        (b"[1, NaN]", 4),
        (b"[-Infinity]", 2),
        (nested(MAX_DEPTH + 1), MAX_DEPTH),
        (nested(MAX_DEPTH + 1, b"", b" "), 2 * MAX_DEPTH),
        (b"[" * 9000 + b"1}" + b"]" * 8999, 9001),
        (nested_mixed(MAX_DEPTH + 1), 50000),
        (b"[" * 3000 + b"1,]" + b"]" * 2999, 3002),
        (nested(2000, b"NaN"), 2000),
    ],
)
def test_error_offset_is_a_byte_offset(src: bytes, offset: int) -> None:
    with pytest.raises(InvalidJSON) as err:
        compact(src)
    assert err.value.offset == offset


@pytest.mark.parametrize(
    "src",
    [
        b'[1 x, "s3cr3t-s3cr3t-s3cr3t"]',
        b'{"password": s3cr3t-s3cr3t-s3cr3t}',
        b'{"password": "s3cr3t-s3cr3t-s3cr3t',
        b"x" * 100_000,
        "ä".encode() * 50_000 + b"\x00",
    ],
)
def test_error_message_quotes_at_most_a_few_bytes(src: bytes) -> None:
    with pytest.raises(InvalidJSON) as err:
        compact(src)
    message = str(err.value)
    assert len(message) <= 120
    assert "s3cr3t-s3cr3t" not in message
    assert "xxxxx" not in message


def test_parse_builds_python_values() -> None:
    assert parse(b'{"a": 1, "a": 2, "b": [true, false, null]}') == {
        "a": 2,
        "b": [True, False, None],
    }
    assert parse(b'{"a":"\xff"}') == {"a": "\udcff"}
    assert parse(b'"\\ud800"') == "\ud800"
    assert parse(b'"\\u00e9\\/"') == "é/"
    one_five, thousand, forty_two = parse(b"[1.50, 1e3, 42]")
    assert (one_five, thousand, forty_two) == (1.5, 1000.0, 42)
    assert isinstance(thousand, float) and type(forty_two) is int


def test_parse_keeps_long_integers_and_minus_zero_as_their_text() -> None:
    digits = "9" * CHEAP_INT_DIGITS
    short, long, negative, minus_zero = parse(f"[{digits}, 1{digits}, -{digits}9, -0]".encode())
    assert type(short) is int and short == int(digits)
    assert isinstance(long, IntegerText) and long.text == "1" + digits
    assert isinstance(negative, IntegerText) and negative.text == f"-{digits}9"
    assert long == float("inf") and negative == float("-inf")  # JMESPath sees numbers
    assert isinstance(minus_zero, IntegerText) and minus_zero.text == "-0" and minus_zero == 0
    huge = parse(b'{"n": ' + b"1" + b"0" * 999_999 + b"}")["n"]  # int() would take seconds
    assert huge.text == "1" + "0" * 999_999


def test_parse_handles_deep_nesting() -> None:
    value = parse(nested_objects(MAX_DEPTH - 1, b' [ "x" ] '))
    depth = 0
    while isinstance(value, dict):
        value, depth = value["k"], depth + 1
    assert (depth, value) == (MAX_DEPTH - 1, ["x"])


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/json;charset=UTF-8", True),
        ("APPLICATION/JSON", True),
        ("Application/Json ; charset=utf-8", True),
        (" application/json ", True),
        ("application/vnd.api+json", True),
        ("application/merge-patch+json", True),
        ("application/problem+json; charset=utf-8", True),
        ("application/VND.Example.V2+JSON", True),
        (None, False),
        ("", False),
        ("text/json", False),
        ("text/plain", False),
        ("application/jsonl", False),
        ("application/json-seq", False),
        ("application/x-ndjson", False),
        ("application/json5", False),
        ("application/+json", False),
        ("application/vnd.api+json2", False),
        ("application/json+xml", False),
        ("application/ json", False),
        ("application/json, text/plain", False),
        ("multipart/form-data; boundary=x", False),
        ("application/x-www-form-urlencoded", False),
        ("applicat\u0131on/json", False),  # dotless i must not case-fold to ASCII "i"
        ("application/j\u017fon", False),  # long s must not case-fold to ASCII "s"
    ],
)
def test_json_content_types(content_type: str | None, expected: bool) -> None:
    assert is_json_content_type(content_type) is expected


# --------------------------------------------------------------------------------------------
# Properties

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**300), max_value=10**300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
DOCS = st.recursive(
    SCALARS,
    lambda kids: (
        st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids, max_size=5)
    ),
    max_leaves=40,
)


@given(DOCS, st.booleans())
@settings(max_examples=300, deadline=None)
def test_pretty_json_compacts_to_json_dumps_compact(doc: Any, ensure_ascii: bool) -> None:
    pretty = json.dumps(doc, indent=2, ensure_ascii=ensure_ascii).encode()
    expected = json.dumps(doc, separators=(",", ":"), ensure_ascii=ensure_ascii).encode()
    assert compact(pretty) == expected
    assert parse(compact(pretty)) == doc
    with python_containers():
        assert compact(pretty) == expected
        assert parse(pretty) == doc


WHITESPACE = st.text(alphabet=" \t\n\r", max_size=3)


@st.composite
def spaced(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A document rendered with random whitespace between all tokens, and its compact form."""
    doc = draw(DOCS)

    def render(value: Any) -> str:
        ws = draw(WHITESPACE)
        if isinstance(value, list):
            inner = ",".join(render(v) + draw(WHITESPACE) for v in value)
            return f"{ws}[{inner or draw(WHITESPACE)}]"
        if isinstance(value, dict):
            pairs = (
                f"{draw(WHITESPACE)}{json.dumps(k)}{draw(WHITESPACE)}:{render(v)}{draw(WHITESPACE)}"
                for k, v in value.items()
            )
            return f"{ws}{{{','.join(pairs) or draw(WHITESPACE)}}}"
        return ws + json.dumps(value)

    text = render(doc) + draw(WHITESPACE)
    return text.encode(), json.dumps(doc, separators=(",", ":")).encode()


@given(spaced())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_whitespace_between_tokens_is_removed_exactly(case: tuple[bytes, bytes]) -> None:
    src, expected = case
    assert compact(src) == expected == go_compact(src)
    with python_containers():
        assert compact(src) == expected


JSONISH = st.lists(
    st.sampled_from(
        [
            *(bytes([c]) for c in b'{}[],:"\\ \n\t\x0c01-+.eEua/\xff\x00\x7f'),
            *(
                b"true",
                b"null",
                b"NaN",
                b"Infinity",
                b'"a"',
                b'"\\u00e9"',
                b'"\\ud800"',
                b"\xc3\xa9",
            ),
        ]
    ),
    max_size=40,
).map(b"".join)


@given(st.binary(max_size=200) | JSONISH)
@settings(max_examples=1500, deadline=None)
def test_arbitrary_bytes_agree_with_go_and_raise_only_invalid_json(src: bytes) -> None:
    expected = go_compact(src)
    assert ours(src) == expected
    with python_containers():
        assert ours(src) == expected
    try:
        parse(src)
    except InvalidJSON:
        assert expected is None
    else:
        assert expected is not None


@given(DOCS, st.data())
@settings(max_examples=300, deadline=None)
def test_mutated_documents_agree_with_go(doc: Any, data: st.DataObject) -> None:
    src = bytearray(json.dumps(doc, indent=1, ensure_ascii=False).encode())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(src)))
        byte = data.draw(st.sampled_from(b' \t\n"\\{}[],:0-.eu\x00\xff'))
        if data.draw(st.booleans()) and at < len(src):
            del src[at]
        else:
            src.insert(at, byte)
    assert ours(bytes(src)) == go_compact(bytes(src))
    with python_containers():
        assert ours(bytes(src)) == go_compact(bytes(src))
