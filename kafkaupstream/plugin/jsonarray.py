"""The elements of a JSON array body: the records of a ``json-array`` batch.

The whole body is validated and compacted first, exactly as a single JSON body is (Go's rules,
:func:`~kafkaupstream.plugin.jsonbody.compact`), so an array batch accepts exactly what a
single body accepts; the compacted array is then cut at its top-level commas, which leaves each
element's bytes as compacting it alone would give them.
"""

from __future__ import annotations

import re

from kafkaupstream.plugin.jsonbody import InvalidJSON, compact

__all__ = ["InvalidElement", "NotAnArray", "array_elements"]

#: A string (to skip; an unterminated one runs to the end) or a structural character.
_TOKEN = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\Z)|[\[\]{},]', re.DOTALL)
_QUOTE, _COMMA = ord('"'), ord(",")
_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")


class NotAnArray(ValueError):
    """The body is valid JSON, but not an array."""


class InvalidElement(ValueError):
    """The body is not valid JSON; ``index`` is the element the error lies in (None: outside)."""

    def __init__(self, index: int | None, error: InvalidJSON) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


def array_elements(body: bytes) -> list[bytes]:
    """Each element of the JSON array ``body``, compacted; raises the two errors above."""
    try:
        compacted = compact(body)
    except InvalidJSON as exc:
        raise InvalidElement(_element_at(body, exc.offset), exc) from None
    if not compacted.startswith(b"["):
        raise NotAnArray("the body is not a JSON array")
    if compacted == b"[]":
        return []
    elements: list[bytes] = []
    depth, start = 0, 1
    for token in _TOKEN.finditer(compacted):
        pos = token.start()
        char = compacted[pos]
        if char == _QUOTE:
            continue
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
            if depth == 0:  # the array's own "]": compact() left nothing after it
                elements.append(compacted[start:pos])
        elif depth == 1:
            elements.append(compacted[start:pos])
            start = pos + 1
    return elements


def _element_at(body: bytes, offset: int) -> int | None:
    """Which element of an array the invalid byte at ``offset`` belongs to (None: none).

    Only the bytes before the error are read; they are a valid JSON prefix, so strings and
    nesting are told apart as a parser would.
    """
    depth, index, seen_array = 0, 0, False
    for token in _TOKEN.finditer(body, 0, offset):
        char = body[token.start()]
        if char == _QUOTE:
            if depth == 0:
                return None  # a string at the top: the body is no array
            continue
        if char in _OPEN:
            if depth == 0:
                if seen_array or char != ord("["):
                    return None
                seen_array = True
            depth += 1
        elif char in _CLOSE:
            depth -= 1
            if depth == 0:
                return None  # the array had ended: the error is in what follows it
        elif char == _COMMA and depth == 1:
            index += 1
    return index if depth > 0 else None
