"""The shared conf-token registry of a multi-worker runner, served by the parent process.

Problem: APISIX may PrepareConf on one connection and send the HTTPReqCall on another, and with
several worker processes accepting on one socket the two can land in different processes. Tokens
must therefore mean the same thing everywhere: counted up by one allocator (from a random start,
see ``tokens.py``: why a stale token of an earlier runner must be unknown), one token per
non-empty key, one TTL refreshed by a use in any worker, CONF_TOKEN_NOT_FOUND everywhere once
expired.

Design: the parent (which must outlive the workers anyway: it holds the socket and restarts
them) owns the one :class:`ConfTokenRegistry` of ``token -> (key, conf list, expiry)``. Each
worker talks to it over its own socketpair (:mod:`token_client`), and keeps a per-process cache
of what its plugins prepared (:mod:`confs`):

- PrepareConf: one round trip (register), rare (once per route version per ~54 min in APISIX).
- HTTPReqCall with a token the worker holds: no round trip. The use is recorded locally and sent
  in one batch per flush interval (``touch``), carrying the time of use, so the registry's TTL is
  exactly what one process would have computed, only learnt up to one interval later.
- First use of a token in a worker (or after its local copy lapsed): one round trip (lookup),
  then the plugins prepare the conf list locally; tokens from other workers are found this way.
- A key re-registered with a different conf list: the parent tells the other workers to drop
  their prepared copy (``changed``) before it answers the registering worker.
- A worker restarted after a crash starts with an empty cache and loses no token.

Rejected alternatives:

- Shared memory (``multiprocessing.shared_memory``/``mmap``) with a lock: conf values are
  variable-length strings (up to 16 MiB), so it needs an allocator inside the segment; a worker
  SIGKILLed while holding a ``multiprocessing.Lock`` leaves it locked forever (there is no
  robust mutex in the standard library), which contradicts "a killed worker is replaced". And it
  would still need a per-process cache of prepared states, so it saves only the rare round trip.
- Deterministic tokens (hash of the key, or per-worker strides): keyless PrepareConfs could not
  be found by another worker, 32-bit hashes of different keys collide, and strides counted from a
  fixed start repeat across runner starts.
- Broadcasting every registration to every worker: the same IPC plus N copies, and TTL refreshes
  would have to be broadcast too.

Cost of the choice (also in docs/decisions.md): a local hit is a dict lookup (well under 1 us); a
shared lookup is a socketpair round trip plus JSON (tens of us). One limitation is accepted: a use
served locally within the last flush interval before a token's expiry may not reach the registry
before another worker asks for the same token, which then gets CONF_TOKEN_NOT_FOUND; APISIX
answers that with a PrepareConf, which is always safe.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

from kafkaupstream.server.confs import ConfList
from kafkaupstream.server.token_wire import (
    Message,
    MessageBuffer,
    WireError,
    confs_from_wire,
    encode,
    lease_to_wire,
)
from kafkaupstream.server.tokens import ConfTokenRegistry

log = logging.getLogger(__name__)

_RECV_SIZE = 1 << 16


class TokenService:
    """Answers the workers' messages from the one registry (pure: no sockets here)."""

    def __init__(self, registry: ConfTokenRegistry[ConfList]) -> None:
        self.registry = registry

    def handle(self, message: Message) -> tuple[Message | None, int | None]:
        """One worker message -> (reply or None, token whose conf list changed, or None)."""
        op = message.get("op")
        try:
            if op == "register":
                key = str(message["key"])
                confs = confs_from_wire(message["confs"])
                before = self.registry.peek_key(key)
                lease = self.registry.register(key, confs)
                changed = before is not None and before.value != confs
                reply = {"id": message["id"], "lease": lease_to_wire(lease)}
                return reply, lease.token if changed else None
            if op == "lookup":
                found = self.registry.lookup(int(message["token"]))
                return {"id": message["id"], "lease": lease_to_wire(found)}, None
            if op == "touch":
                for token, used_at in message["uses"]:
                    self.registry.touch(int(token), float(used_at))
                return None, None
            if op == "beat":  # the hub noted the time it came; nothing else to do
                return None, None
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"bad {op!r} message: {exc!r}") from exc
        raise WireError(f"unknown op {op!r}")


class Channel:
    """The parent's end of one worker's socketpair: non-blocking, buffered both ways."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._in = MessageBuffer()
        self._out = bytearray()

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def wants_write(self) -> bool:
        return bool(self._out)

    def receive(self) -> list[Message] | None:
        """Whatever complete messages arrived; None once the worker's end is closed."""
        messages: list[Message] = []
        while True:
            try:
                data = self.sock.recv(_RECV_SIZE)
            except BlockingIOError:
                return messages
            except OSError:
                return None
            if not data:
                return messages or None
            messages.extend(self._in.feed(data))

    def send(self, message: dict[str, Any]) -> None:
        self._out += encode(message)
        self.flush()

    def flush(self) -> None:
        while self._out:
            try:
                sent = self.sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._out.clear()  # the worker is gone; its death is handled by the reaper
                return
            del self._out[:sent]

    def close(self) -> None:
        self.sock.close()


class ChannelHub:
    """Every worker's channel on the parent's selector, keyed by the worker's pid."""

    def __init__(
        self,
        service: TokenService,
        selector: selectors.BaseSelector,
        on_ready: Callable[[int], None],
    ) -> None:
        self._service = service
        self._selector = selector
        self._on_ready = on_ready
        self._channels: dict[int, Channel] = {}
        self._writing: set[int] = set()
        #: When each worker's channel last brought a message (any message is a sign of life).
        self.heard_at: dict[int, float] = {}

    def sockets(self) -> list[socket.socket]:
        return [channel.sock for channel in self._channels.values()]

    def add(self, pid: int, sock: socket.socket) -> None:
        self._channels[pid] = Channel(sock)
        self.heard_at[pid] = time.monotonic()
        self._selector.register(sock, selectors.EVENT_READ, pid)

    def remove(self, pid: int) -> None:
        channel = self._channels.pop(pid, None)
        self._writing.discard(pid)
        self.heard_at.pop(pid, None)
        if channel is not None:
            self._selector.unregister(channel.sock)
            channel.close()

    def serve(self, pid: int, events: int) -> None:
        """Handle what the selector reported; raises WireError (channel already removed)."""
        channel = self._channels.get(pid)
        if channel is None:
            return
        if events & selectors.EVENT_WRITE:
            channel.flush()
        if not events & selectors.EVENT_READ:
            return
        try:
            messages = channel.receive()
            if messages:
                self.heard_at[pid] = time.monotonic()
            for message in messages or ():
                self._on_message(pid, channel, message)
        except WireError:
            self.remove(pid)
            raise
        if messages is None:  # the worker is exiting; the parent's reaper decides what follows
            self.remove(pid)

    def update_interest(self) -> None:
        """Watch for writability only while a channel has buffered output."""
        for pid, channel in self._channels.items():
            if channel.wants_write == (pid in self._writing):
                continue
            events = selectors.EVENT_READ
            if channel.wants_write:
                self._writing.add(pid)
                events |= selectors.EVENT_WRITE
            else:
                self._writing.discard(pid)
            self._selector.modify(channel.sock, events, pid)

    def _on_message(self, pid: int, channel: Channel, message: Message) -> None:
        if message.get("op") == "ready":
            self._on_ready(pid)
            return
        reply, changed = self._service.handle(message)
        if changed is not None:  # before the reply: the others drop their copy first
            for other_pid, other in self._channels.items():
                if other_pid != pid:
                    other.send({"op": "changed", "token": changed})
        if reply is not None:
            channel.send(reply)
