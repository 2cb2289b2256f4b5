"""A one-pass JSON validity scan by Go's rules, for the compiled core: ``jsonbody`` decides.

Compiled (``_jsonscan.pxd`` types every local as a C integer) this is a loop over the bytes:
about a microsecond per KiB, where the reference, CPython's C scanner, builds a Python object
for every value. It only ever says "valid" or "not sure": a body it does not accept goes to the
reference, which says what is wrong with it, so no error message can differ. The rules are Go's
``encoding/json`` scanner's: RFC 8259 values, whitespace `` \\t\\n\\r``, no control character in
a string, any other byte (invalid UTF-8 included) kept as it is, at most 10000 levels of nesting.

Interpreted it would be slower than the reference: ``jsonbody`` uses it only when compiled.
"""

from __future__ import annotations

from typing import Final

#: Go's maxNestingDepth (``jsonbody.MAX_DEPTH``).
MAX_DEPTH: Final = 10_000

#: What :func:`scan` found.
UNSURE: Final = 0  # invalid, or not for this scanner to say: ask the reference
COMPACT_BY_TRANSLATE: Final = 1  # valid, no whitespace inside any string
COMPACT_BY_SPLIT: Final = 2  # valid, with spaces inside strings


def _string(data: bytes, i: int, n: int) -> int:
    """The string opening at ``data[i]``: its end, negated if it holds a space; -1 if invalid."""
    spaced = False
    i += 1
    while i < n:
        c = data[i]
        if c == 0x22:  # "
            return -(i + 1) if spaced else i + 1
        if c == 0x5C:  # backslash
            i += 1
            if i >= n:
                return -1
            c = data[i]
            if c == 0x75:  # u: four hex digits
                if i + 4 >= n:
                    return -1
                for k in range(i + 1, i + 5):
                    h = data[k]
                    if not (0x30 <= h <= 0x39 or 0x41 <= h <= 0x46 or 0x61 <= h <= 0x66):
                        return -1
                i += 5
                continue
            # " \ / b f n r t
            if c not in (0x22, 0x5C, 0x2F, 0x62, 0x66, 0x6E, 0x72, 0x74):
                return -1
        elif c < 0x20:
            return -1
        elif c == 0x20:
            spaced = True
        i += 1
    return -1


def _number(data: bytes, i: int, n: int) -> int:
    """The number starting at ``data[i]``: the index after it, or -1 if it is not one."""
    c = data[i]
    if c == 0x2D:  # -
        i += 1
        if i >= n:
            return -1
        c = data[i]
    if c == 0x30:  # 0
        i += 1
    elif 0x31 <= c <= 0x39:
        i += 1
        while i < n and 0x30 <= data[i] <= 0x39:
            i += 1
    else:
        return -1
    if i < n and data[i] == 0x2E:  # .
        i += 1
        if i >= n or not 0x30 <= data[i] <= 0x39:
            return -1
        while i < n and 0x30 <= data[i] <= 0x39:
            i += 1
    if i < n and (data[i] == 0x65 or data[i] == 0x45):  # e E
        i += 1
        if i < n and (data[i] == 0x2B or data[i] == 0x2D):
            i += 1
        if i >= n or not 0x30 <= data[i] <= 0x39:
            return -1
        while i < n and 0x30 <= data[i] <= 0x39:
            i += 1
    return i


def _space(data: bytes, i: int, n: int) -> int:
    while i < n:
        c = data[i]
        if c != 0x20 and c != 0x0A and c != 0x0D and c != 0x09:
            return i
        i += 1
    return i


def scan(data: bytes) -> int:
    """One of UNSURE, COMPACT_BY_TRANSLATE, COMPACT_BY_SPLIT for the body ``data``."""
    n = len(data)
    spaced = False
    # One byte per open container: 1 for an object, 0 for an array.
    stack = bytearray(64)
    depth = 0
    i = _space(data, 0, n)
    while True:
        # A value starts at i.
        if i >= n:
            return UNSURE
        c = data[i]
        if c == 0x7B or c == 0x5B:  # { [
            if depth >= MAX_DEPTH:
                return UNSURE
            if depth == len(stack):
                stack += bytearray(depth)
            is_object = c == 0x7B
            stack[depth] = 1 if is_object else 0
            depth += 1
            i = _space(data, i + 1, n)
            if i >= n:
                return UNSURE
            c = data[i]
            if c == (0x7D if is_object else 0x5D):  # an empty container: a finished value
                depth -= 1
                i += 1
            elif is_object:
                if c != 0x22:
                    return UNSURE
                end = _string(data, i, n)
                if end == -1:
                    return UNSURE
                if end < 0:
                    spaced = True
                    end = -end
                i = _space(data, end, n)
                if i >= n or data[i] != 0x3A:  # :
                    return UNSURE
                i = _space(data, i + 1, n)
                continue
            else:
                continue
        elif c == 0x22:
            end = _string(data, i, n)
            if end == -1:
                return UNSURE
            if end < 0:
                spaced = True
                end = -end
            i = end
        elif c == 0x74:  # t
            if data[i : i + 4] != b"true":
                return UNSURE
            i += 4
        elif c == 0x66:  # f
            if data[i : i + 5] != b"false":
                return UNSURE
            i += 5
        elif c == 0x6E:  # n
            if data[i : i + 4] != b"null":
                return UNSURE
            i += 4
        else:
            i = _number(data, i, n)
            if i < 0:
                return UNSURE
        # A value ended at i: close every container that ends here, then expect the next value.
        while True:
            i = _space(data, i, n)
            if depth == 0:
                if i != n:
                    return UNSURE
                return COMPACT_BY_SPLIT if spaced else COMPACT_BY_TRANSLATE
            if i >= n:
                return UNSURE
            c = data[i]
            in_object = stack[depth - 1] == 1
            if c == 0x2C:  # ,
                i = _space(data, i + 1, n)
                if in_object:
                    if i >= n or data[i] != 0x22:
                        return UNSURE
                    end = _string(data, i, n)
                    if end == -1:
                        return UNSURE
                    if end < 0:
                        spaced = True
                        end = -end
                    i = _space(data, end, n)
                    if i >= n or data[i] != 0x3A:
                        return UNSURE
                    i = _space(data, i + 1, n)
                break
            if c == (0x7D if in_object else 0x5D):
                depth -= 1
                i += 1
                continue
            return UNSURE


def strip(data: bytes) -> bytes:
    """For a body :func:`scan` found valid: the bytes without the whitespace outside strings.

    One pass copying every byte that stays (Go's ``json.Compact``); the reference splits the
    body on its quotes instead, which costs a Python object per string.
    """
    n = len(data)
    out = bytearray(n)
    j = 0
    in_string = False
    i = 0
    while i < n:
        c = data[i]
        if in_string:
            out[j] = c
            j += 1
            if c == 0x5C:  # the escaped byte goes too (valid JSON: there is one)
                i += 1
                out[j] = data[i]
                j += 1
            elif c == 0x22:
                in_string = False
        elif c != 0x20 and c != 0x0A and c != 0x0D and c != 0x09:
            out[j] = c
            j += 1
            if c == 0x22:
                in_string = True
        i += 1
    del out[j:]
    return bytes(out)
