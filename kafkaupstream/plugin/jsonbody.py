"""JSON request bodies: validate and compact exactly like Go's ``encoding/json.Compact``.

The Go original produced ``json.Compact(body)``; records must stay byte-identical, so compaction
only deletes insignificant whitespace and never re-serialises (number spelling, escapes, key order,
duplicate keys and even invalid UTF-8 inside strings survive). Validation uses CPython's C JSON
scanner, adjusted wherever it disagrees with Go's scanner (see ``_decode``).
"""

from __future__ import annotations

import re
import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

# typeshed does not declare the C accelerators below.
from json.decoder import JSONDecodeError, scanstring  # type: ignore[attr-defined]
from json.scanner import c_make_scanner  # type: ignore[attr-defined]
from typing import Any, Final

from kafkaupstream.core import is_compiled
from kafkaupstream.plugin import _jsonscan

__all__ = [
    "CHEAP_INT_DIGITS",
    "MAX_DEPTH",
    "IntegerText",
    "InvalidJSON",
    "compact",
    "is_json_content_type",
    "parse",
]

if c_make_scanner is None:  # pragma: no cover - CPython always builds _json
    # The pure-Python scanner's number regex uses \d, which accepts non-ASCII digits Go rejects.
    raise ImportError("kafkaupstream.plugin.jsonbody needs CPython's _json accelerator")

MAX_DEPTH = 10_000
"""Go's ``maxNestingDepth``: 10000 nested arrays/objects are valid, 10001 are not."""

_WS = b" \t\n\r"
_WS_CHARS = " \t\n\r"
_WS_RUN = re.compile(r"[ \t\n\r]*+")
# At most _C_RETRY_AFTER consecutive "[", so a bulk push still ends where a C retry is due.
_ARRAY_RUN = re.compile(r"\[(?:[ \t\n\r]*+\[){0,63}")
# Bytes that cannot occur in valid JSON (control characters), used as in-band placeholders.
_SEP, _ESC_BACKSLASH, _ESC_QUOTE = b"\x00", b"\x01", b"\x02"
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
# Everything before the first NaN/Infinity outside strings; only used to locate that error.
_BEFORE_CONSTANT = re.compile(rb'(?:[^"NI]++|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+', re.DOTALL)
_JSON_MEDIA_TYPE = re.compile(
    r"[ \t]*application/(?:[!#$%&'*+.^_`|~0-9a-z-]+\+)?json[ \t]*(?:;.*)?",
    re.ASCII | re.IGNORECASE | re.DOTALL,
)
# Levels handled in Python after the C scanner ran out of recursion before it is retried; the
# window doubles while one spine keeps failing, so a 10000-deep spine costs a few C retries.
_C_RETRY_AFTER = 64
_NEAR_BYTES = 4

_ScanOnce = Callable[[str, int], tuple[Any, int]]


class InvalidJSON(ValueError):
    """The body is not one valid JSON text; says where and why, quoting at most a few bytes."""

    def __init__(self, offset: int, reason: str, near: bytes = b"") -> None:
        self.offset = offset
        self.reason = reason
        detail = f" near {near!r}" if near else ""
        super().__init__(f"invalid JSON at byte {offset}: {reason}{detail}")


class _NonFinite(Exception):
    """Raised from the scanner's parse_constant hook: Go has no NaN or Infinity."""


def _reject_constant(name: str) -> Any:
    raise _NonFinite(name)


class IntegerText(float):
    """An integer literal kept as its source text: longer than :data:`CHEAP_INT_DIGITS`, or ``-0``.

    ``int()`` of n digits costs O(n^2) (a 999,000-digit key took over half a second of CPU) and
    is refused past ``sys.get_int_max_str_digits()``; a key needs only the text, as gjson's
    was. JMESPath sees the float of the text (float() is linear), so it is still a number.
    """

    __slots__ = ("text",)
    text: str


#: Integers up to this many digits become ints: CPython's ``str_digits_check_threshold``,
#: below which int() is a few microseconds.
CHEAP_INT_DIGITS = 640


def _integer(literal: str) -> int | IntegerText:
    if len(literal) <= CHEAP_INT_DIGITS and literal != "-0":
        return int(literal)
    number = IntegerText(literal)
    number.text = literal
    return number


@dataclass(frozen=True, slots=True)
class _Hooks:
    """The attributes ``c_make_scanner`` reads from a JSONDecoder, as an immutable value."""

    parse_int: Callable[[str], Any] = int
    parse_float: Callable[[str], Any] = float
    parse_constant: Callable[[str], Any] = _reject_constant
    strict: bool = True  # control characters inside strings are invalid, as in Go
    object_hook: None = None
    object_pairs_hook: None = None


# One C scanner per set of hooks, made once (making one costs as much as scanning 300 bytes).
# Its only state is a memo that interns object keys, emptied at the end of every call (failing
# ones too); two threads scanning at once (large bodies are compacted on a thread) could at worst
# share interned keys, which changes no result. Validation only: numbers stay strings (no float
# conversion, no integer digit limit).
_VALIDATE: Final[_ScanOnce] = c_make_scanner(_Hooks(parse_int=str, parse_float=str))
_PARSE: Final[_ScanOnce] = c_make_scanner(_Hooks(parse_int=_integer))
#: The compiled core's validity scan (a C loop, ~1 µs per KiB); interpreted it would be slower
#: than the C scanner, so the pure-Python build validates with the reference alone.
_FAST_SCAN: Final = _jsonscan.scan if is_compiled(_jsonscan) else None


def _skip(text: str, i: int) -> int:
    match = _WS_RUN.match(text, i)
    return match.end() if match else i


def _c_reach() -> int:
    """Upper bound on the nesting the C scanner can reach before it raises RecursionError."""
    if sys.version_info < (3, 12):  # _json shares the interpreter's recursion limit
        return sys.getrecursionlimit()
    return MAX_DEPTH + 1  # separate C-level limits: do not rely on them


def _split_strings(data: bytes) -> tuple[list[bytes], bool]:
    """Split valid JSON on string quotes: even items lie outside strings, odd items inside.

    Escaped quotes (and, before them, escaped backslashes, paired left to right as a parser
    does, so that ``\\\\"`` still ends a string) become placeholder bytes first; returns whether.
    """
    if b'\\"' not in data:  # no quote follows a backslash: every quote delimits a string
        return data.split(b'"'), False
    if b'\\\\"' in data:  # without ``\\"`` every ``\"`` is an escaped quote
        data = data.replace(b"\\\\", _ESC_BACKSLASH)
    return data.replace(b'\\"', _ESC_QUOTE).split(b'"'), True


def _strip_whitespace(data: bytes) -> bytes:
    """Delete the whitespace outside strings of valid JSON with whole-buffer C operations.

    Per-match regex templates (``sub(r"\\1")``) run Python code per match on 3.11 and are ~5x
    slower; see harness/bench/jsonbody_bench.py.
    """
    if not (b" " in data or b"\n" in data or b"\r" in data or b"\t" in data):
        return data
    parts, escaped = _split_strings(data)
    outside = _SEP.join(parts[::2])
    stripped = outside.translate(None, _WS)
    if len(stripped) == len(outside):  # already compact; the whitespace is all inside strings
        return data
    parts[::2] = stripped.split(_SEP)
    out = b'"'.join(parts)
    if escaped:
        out = out.replace(_ESC_QUOTE, b'\\"').replace(_ESC_BACKSLASH, b"\\\\")
    return out


def _too_deep(data: bytes) -> bool:
    """Exact nesting check for valid JSON (an invalid body is rejected by the scanner anyway)."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return False
    outside = b"".join(_split_strings(data)[0][::2])
    steps = array("b", outside.translate(_DEPTH_STEP, _NOT_BRACKET))
    return max(accumulate(steps), default=0) > MAX_DEPTH


def _key(text: str, i: int) -> tuple[str, int]:
    """Read ``"key" :`` at i; return the key and the index of its value."""
    if not text.startswith('"', i):
        raise JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
    key, i = scanstring(text, i + 1, True)
    i = _skip(text, i)
    if not text.startswith(":", i):
        raise JSONDecodeError("Expecting ':' delimiter", text, i)
    return key, _skip(text, i + 1)


def _scan(text: str, scan_once: _ScanOnce, reach: int) -> Any:
    """Parse one JSON text iteratively, handing every subtree it safely can to the C scanner.

    Python keeps an explicit stack only where the C scanner ran out of recursion, or where it
    could exceed MAX_DEPTH unnoticed (depth + reach > MAX_DEPTH), so depth is checked exactly.
    """
    stack: list[list[Any]] = []  # [open container, pending key]
    no_c_from = no_c_to = 0
    window = _C_RETRY_AFTER
    i = _skip(text, 0)
    while True:
        depth = len(stack)
        ch = text[i : i + 1]
        opening = ch in ("[", "{")
        if not opening or (depth + reach <= MAX_DEPTH and not no_c_from <= depth < no_c_to):
            try:
                value, i = scan_once(text, i)
                opening = False
            except StopIteration as err:  # err.value: where the (maybe nested) value is missing
                raise JSONDecodeError("Expecting value", text, err.value) from None
            except RecursionError:
                if not opening:
                    raise  # no stack left even for a scalar: the caller itself is at the limit
                window = window * 2 if depth == no_c_to else _C_RETRY_AFTER
                no_c_from, no_c_to = depth, depth + window
        if opening:
            run = _ARRAY_RUN.match(text, i)  # a run of "[" is pushed at once: deep spines
            opened = run.group() if run else ch
            levels = max(1, opened.count("["))
            if depth + levels > MAX_DEPTH:  # Go fails at the first bracket too deep
                too_deep = [k for k, c in enumerate(opened) if c in "[{"][MAX_DEPTH - depth]
                raise JSONDecodeError(f"exceeded max depth {MAX_DEPTH}", text, i + too_deep)
            i = _skip(text, i + len(opened))
            if ch == "[":
                stack.extend([[], None] for _ in range(levels))
                if not text.startswith("]", i):
                    continue
                value, i = stack.pop()[0], i + 1
            elif text.startswith("}", i):
                value, i = {}, i + 1
            else:
                key, i = _key(text, i)
                stack.append([{}, key])
                continue
        while True:  # attach the finished value, closing every container that ends here
            ch = text[i : i + 1]
            if ch and ch in _WS_CHARS:
                i = _skip(text, i)
                ch = text[i : i + 1]
            if not stack:
                if ch:
                    raise JSONDecodeError("Extra data", text, i)
                return value
            top = stack[-1]
            container = top[0]
            if type(container) is list:
                container.append(value)
                closer = "]"
            else:
                container[top[1]] = value  # duplicate keys: last wins, like the C scanner
                closer = "}"
            if ch == ",":
                i = _skip(text, i + 1)
                if closer == "}":
                    top[1], i = _key(text, i)
                break
            if ch != closer:
                raise JSONDecodeError(f"Expecting ',' delimiter or '{closer}'", text, i)
            stack.pop()
            value, i = container, i + 1


def _decode(data: bytes, scan_once: _ScanOnce) -> Any:
    """Run the C scanner with Go's rules; every failure becomes InvalidJSON.

    Differences handled: bytes are decoded as UTF-8 with surrogateescape (Go never checks UTF-8;
    json.loads(bytes) would sniff UTF-16/32 and strip a BOM); NaN/Infinity are rejected via
    parse_constant; nesting is limited to exactly MAX_DEPTH instead of the recursion limit.
    """
    text = data.decode("utf-8", "surrogateescape")
    reach = _c_reach()
    if reach > MAX_DEPTH and not _too_deep(data):
        reach = 0  # nesting is known to be within MAX_DEPTH: the C scanner may parse anything
    try:
        return _scan(text, scan_once, reach)
    except JSONDecodeError as err:
        offset = len(text[: err.pos].encode("utf-8", "surrogateescape"))
        reason = err.msg.removesuffix(" at").removesuffix(" starting")
        raise InvalidJSON(offset, reason, data[offset : offset + _NEAR_BYTES]) from None
    except _NonFinite as err:
        before = _BEFORE_CONSTANT.match(data)
        offset = before.end() if before else 0
        raise InvalidJSON(
            offset, f"{err} is not JSON", data[offset : offset + _NEAR_BYTES]
        ) from None


def compact(data: bytes) -> bytes:
    """Validate and compact exactly like Go's ``json.Compact``; raises InvalidJSON."""
    verdict = _FAST_SCAN(data) if _FAST_SCAN is not None else _jsonscan.UNSURE
    if verdict == _jsonscan.COMPACT_BY_TRANSLATE:  # valid, and no whitespace inside strings
        return data.translate(None, _WS)
    if verdict == _jsonscan.COMPACT_BY_SPLIT:  # valid, with spaces inside strings
        return _jsonscan.strip(data)
    if verdict == _jsonscan.UNSURE:  # the reference decides, and says what is wrong
        _decode(data, _VALIDATE)
    return _strip_whitespace(data)


def parse(data: bytes) -> Any:
    """Parse a JSON body (accepting exactly what compact() accepts) for key extraction.

    Strings with invalid UTF-8 come back surrogate-escaped; long integers (and ``-0``) as
    :class:`IntegerText`, so no integer costs more than reading its digits.
    """
    return _decode(data, _PARSE)


def is_json_content_type(content_type: str | None) -> bool:
    """True for ``application/json`` and ``application/<subtype>+json``, any parameters.

    ``text/json``, ``application/jsonl``, ``application/json-seq`` and the like are not JSON
    bodies under the contract and are produced unchanged.
    """
    if content_type == "application/json":  # what nearly every JSON request sends
        return True
    return content_type is not None and _JSON_MEDIA_TYPE.fullmatch(content_type) is not None
