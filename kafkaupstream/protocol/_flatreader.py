"""The schema-agnostic half of reading FlatBuffers: bounds-checked fields, vectors, strings.

Every offset followed is checked, so hostile bytes raise :class:`MalformedFrame` or one of
:data:`READ_ERRORS` (which the codec turns into MalformedFrame), never anything else. The
[TextEntry] vector reader lives here too: every request carries two of them.
"""

from __future__ import annotations

import struct
from typing import Final

from kafkaupstream.protocol.errors import MalformedFrame
from kafkaupstream.protocol.messages import Entries, TextEntry

_u8 = struct.Struct("<B").unpack_from
_u16 = struct.Struct("<H").unpack_from
_u32 = struct.Struct("<I").unpack_from
_i32 = struct.Struct("<i").unpack_from
# Readers for the first n vtable slots, and the all-absent answer, indexed by n.
_SLOTS = tuple(struct.Struct(f"<{n}H").unpack_from for n in range(8))
_ABSENT = tuple((0,) * n for n in range(8))

# What a read of hostile bytes can raise: struct.error is a fixed-size read past the end (the
# checks below only cover what struct cannot see: negative vtables and over-long vectors). The
# rest should be unreachable and are caught so that decoding can only ever fail as MalformedFrame.
READ_ERRORS: Final = (struct.error, IndexError, OverflowError, ValueError, RecursionError)


def _fields(buf: bytes, table: int, count: int) -> tuple[int, ...]:
    """The vtable offsets of a table's first ``count`` fields, 0 where a field is absent.

    A vtable shorter than the schema (trimmed by the writer, or an older schema) means the rest
    are absent.
    """
    vtable = table - _i32(buf, table)[0]
    if vtable < 0:
        raise MalformedFrame(f"the table at byte {table} has a vtable before the buffer start")
    present = (_u16(buf, vtable)[0] - 4) >> 1
    if present >= count:
        return _SLOTS[count](buf, vtable + 4)
    if present <= 0:
        return _ABSENT[count]
    return _SLOTS[present](buf, vtable + 4) + _ABSENT[count - present]


def _deref(buf: bytes, at: int) -> int:
    """The position a uoffset stored at ``at`` points to (uoffsets only point forward)."""
    return at + _u32(buf, at)[0]


def _span(buf: bytes, vector: int, width: int) -> tuple[int, int]:
    """(first element, element count) of the vector at ``vector``, checked to fit the buffer."""
    length = _u32(buf, vector)[0]
    start = vector + 4
    if start + length * width > len(buf):
        raise MalformedFrame(
            f"a vector of {length} elements at byte {vector} runs past the payload"
        )
    return start, length


def _field_bytes(buf: bytes, at: int) -> bytes:
    """The [ubyte] or string whose uoffset is stored at ``at`` (every request's strings and body).

    The length prefix ends a string: APISIX writes garbage where the NUL would be.
    """
    vector = at + _u32(buf, at)[0]
    start = vector + 4
    length = _u32(buf, vector)[0]
    if start + length > len(buf):
        raise MalformedFrame(
            f"a vector of {length} elements at byte {vector} runs past the payload"
        )
    return buf[start : start + length]


def _string_at(buf: bytes, vector: int) -> str:
    """The length prefix ends a string: APISIX writes garbage where the NUL would be."""
    start, length = _span(buf, vector, 1)
    return buf[start : start + length].decode("utf-8", "surrogateescape")


def _entries_at(buf: bytes, vector: int) -> Entries:
    """A [TextEntry] vector: the hot path of every request, hence the inlined reads.

    Entries whose tables and strings do not share storage (what every known builder writes)
    cannot account for more bytes than the payload holds. Once they do, the payload shares
    storage, so decoding restarts on the memoising path: a hostile payload pointing many
    entries at one large string must not turn 16 MiB into gigabytes of Python objects.
    """
    start, length = _span(buf, vector, 4)
    if not length:
        return ()
    size = budget = len(buf)
    u32 = _u32
    # Builders share one vtable among all the entries: read its two slots once.
    slots_of: dict[int, tuple[int, int]] = {}
    out = []
    pos = start
    for rel in struct.unpack_from(f"<{length}I", buf, start):
        table = pos + rel
        pos += 4
        vtable = table - _i32(buf, table)[0]
        slots = slots_of.get(vtable)
        if slots is None:
            slots = slots_of[vtable] = _entry_slots(buf, table, vtable)
        name_at, value_at = slots
        # The vector slot and the table's vtable offset: 8 bytes no other entry can use.
        budget -= 8
        name = ""
        if name_at:
            name_at += table
            name_at += u32(buf, name_at)[0]
            end = name_at + 4 + u32(buf, name_at)[0]
            if end > size:
                raise MalformedFrame(f"the string at byte {name_at} runs past the payload")
            name = buf[name_at + 4 : end].decode("utf-8", "surrogateescape")
            budget -= end - name_at + 4
        value = None
        if value_at:
            value_at += table
            value_at += u32(buf, value_at)[0]
            end = value_at + 4 + u32(buf, value_at)[0]
            if end > size:
                raise MalformedFrame(f"the string at byte {value_at} runs past the payload")
            value = buf[value_at + 4 : end].decode("utf-8", "surrogateescape")
            budget -= end - value_at + 4
        if budget < 0:
            return _shared_entries_at(buf, start, length)
        out.append(TextEntry(name, value))
    return tuple(out)


def _entry_slots(buf: bytes, table: int, vtable: int) -> tuple[int, int]:
    """A TextEntry vtable's (name, value) field offsets, 0 where absent."""
    if vtable < 0:
        raise MalformedFrame(f"the TextEntry at byte {table} has a vtable before the start")
    vtable_size = _u16(buf, vtable)[0]
    if vtable_size >= 8:
        name_at, value_at = _SLOTS[2](buf, vtable + 4)
        return name_at, value_at
    return (_u16(buf, vtable + 4)[0] if vtable_size >= 6 else 0), 0


def _shared_entries_at(buf: bytes, start: int, length: int) -> Entries:
    """A [TextEntry] vector whose entries share tables or strings, each decoded only once."""
    tables: dict[int, TextEntry] = {}
    strings: dict[int, str] = {}
    out = []
    pos = start
    for rel in struct.unpack_from(f"<{length}I", buf, start):
        table = pos + rel
        pos += 4
        entry = tables.get(table)
        if entry is None:
            name_at, value_at = _fields(buf, table, 2)
            name = value = None
            if name_at:
                name_at = _deref(buf, table + name_at)
                name = strings.get(name_at)
                if name is None:
                    name = strings[name_at] = _string_at(buf, name_at)
            if value_at:
                value_at = _deref(buf, table + value_at)
                value = strings.get(value_at)
                if value is None:
                    value = strings[value_at] = _string_at(buf, value_at)
            entry = tables[table] = TextEntry(name or "", value)
        out.append(entry)
    return tuple(out)


def _string(buf: bytes, table: int, at: int, default: str = "") -> str:
    return _field_bytes(buf, table + at).decode("utf-8", "surrogateescape") if at else default


def _entries(buf: bytes, table: int, at: int) -> Entries:
    return _entries_at(buf, _deref(buf, table + at)) if at else ()
