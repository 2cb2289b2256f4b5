"""Messages between a worker and the parent's token service: a 4-byte length, then JSON.

JSON because the traffic is rare (PrepareConf, first use of a token in a worker, one batch of
uses per flush interval) and a readable format is worth more than a few microseconds here. Conf
values decoded with ``surrogateescape`` survive the round trip (``ensure_ascii`` escapes them).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

from kafkaupstream.server.confs import ConfList
from kafkaupstream.server.tokens import Lease

_HEADER = struct.Struct(">I")
#: A PrepareConf payload is at most 16 MiB; JSON escaping can grow it, but not past this.
MAX_MESSAGE = 128 << 20

Message = dict[str, Any]


class WireError(ValueError):
    """A peer sent something that is not a token-service message."""


def encode(message: Mapping[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(body)) + body


class MessageBuffer:
    """Reassembles messages from stream chunks."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buf)
            if length > MAX_MESSAGE:
                raise WireError(f"message of {length} bytes announced")
            end = _HEADER.size + length
            if len(self._buf) < end:
                break
            body = bytes(self._buf[_HEADER.size : end])
            del self._buf[:end]
            try:
                message = json.loads(body)
            except ValueError as exc:
                raise WireError(f"not JSON: {exc}") from exc
            if not isinstance(message, dict):
                raise WireError("a message must be a JSON object")
            out.append(message)
        return out


def confs_to_wire(confs: ConfList) -> list[list[str]]:
    return [[name, value] for name, value in confs]


def confs_from_wire(raw: object) -> ConfList:
    if not isinstance(raw, list):
        raise WireError("confs must be a list")
    out: list[tuple[str, str]] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and _strings(item)):
            raise WireError("each conf entry must be [name, value] strings")
        out.append((item[0], item[1]))
    return tuple(out)


def _strings(items: list[object]) -> bool:
    return all(isinstance(item, str) for item in items)


def lease_to_wire(lease: Lease[ConfList] | None) -> Message | None:
    if lease is None:
        return None
    return {
        "token": lease.token,
        "confs": confs_to_wire(lease.value),
        "exp": lease.expires_at,
        "key": lease.key,
    }


def lease_from_wire(raw: object) -> Lease[ConfList] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise WireError("a lease must be an object")
    try:
        return Lease(
            int(raw["token"]),
            confs_from_wire(raw["confs"]),
            float(raw["exp"]),
            str(raw.get("key", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"bad lease: {exc!r}") from exc
