"""The conf-token registry: what a PrepareConf produced, found again by the token APISIX sends.

Tokens count up from a random 32-bit starting point picked at every runner start (never 0, wrapping
at 2^32-1 past tokens still live); the same idempotent key gets the same token back. The random
start is what keeps routes apart across runner restarts: APISIX keeps tokens in a shared dict that
survives ``apisix reload`` (and a crash its workers have not noticed yet), so a token handed out
by an earlier runner reaches this one; counting from 1 would give it to another route's conf and
serve that route with it. From a random start a stale token is unknown here with probability
~1 and gets CONF_TOKEN_NOT_FOUND, which makes APISIX re-prepare. An entry lives for
1.2 x ``APISIX_CONF_EXPIRE_TIME`` after its last use (what the Go runner does), because APISIX can
keep using a token for up to ~1.9 x that value (shared-dict TTL + per-worker lrucache TTL). An
expired or unknown token is answered with CONF_TOKEN_NOT_FOUND, which makes APISIX re-prepare.

There is exactly one registry per runner: in the process itself with ``--workers 1``, in the
parent with several workers (workers keep only a cache in front of it, see ``confs.py``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

#: APISIX hard-codes 3600 s; tokens must outlive its caches.
DEFAULT_CONF_EXPIRE_S = 3600.0
TTL_FACTOR = 1.2
#: Tokens are uint32 on the wire.
_MAX_TOKEN = 0xFFFFFFFF
#: Sweep expired entries at most this often, so an idle registry does not grow forever.
_SWEEP_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class Lease(Generic[T]):
    """A snapshot of one entry: callers may cache ``value`` until ``expires_at`` (monotonic)."""

    token: int
    value: T
    expires_at: float
    #: The PrepareConf key it was registered with (a worker that adopts the token labels its
    #: metrics with the route the key names); not part of a lease's identity.
    key: str = field(default="", compare=False)


@dataclass(slots=True)
class _Entry(Generic[T]):
    key: str
    value: T
    expires_at: float


class ConfTokenRegistry(Generic[T]):
    """Token -> value, with a TTL refreshed on every use."""

    def __init__(
        self,
        conf_expire_s: float = DEFAULT_CONF_EXPIRE_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        first_token: int | None = None,
    ) -> None:
        """``first_token`` fixes the start of the token space (tests); None picks a random one."""
        if conf_expire_s <= 0:
            raise ValueError("APISIX_CONF_EXPIRE_TIME must be a positive number of seconds")
        if first_token is not None and not 0 < first_token <= _MAX_TOKEN:
            raise ValueError(f"first_token must be in 1..{_MAX_TOKEN}")
        self.ttl_s = conf_expire_s * TTL_FACTOR
        self._clock = clock
        self._next_token = random_first_token() if first_token is None else first_token
        self._by_token: dict[int, _Entry[T]] = {}
        self._by_key: dict[str, int] = {}
        self._next_sweep = clock() + _SWEEP_EVERY_S

    def __len__(self) -> int:
        return len(self._by_token)

    def register(self, key: str, value: T) -> Lease[T]:
        """Store a value and return its lease; a known non-empty key keeps its token."""
        now = self._clock()
        self._maybe_sweep(now)
        if key:
            token = self._by_key.get(key)
            if token is not None:
                entry = self._by_token[token]
                entry.value = value
                entry.expires_at = now + self.ttl_s
                return Lease(token, value, entry.expires_at, key)
        token = self._allocate()
        self._by_token[token] = _Entry(key, value, now + self.ttl_s)
        if key:
            self._by_key[key] = token
        return Lease(token, value, now + self.ttl_s, key)

    def lookup(self, token: int) -> Lease[T] | None:
        """The lease for a token, refreshing its TTL; None if unknown or expired."""
        entry = self._by_token.get(token)
        if entry is None:
            return None
        now = self._clock()
        if entry.expires_at <= now:
            self._drop(token, entry)
            return None
        entry.expires_at = now + self.ttl_s
        return Lease(token, entry.value, entry.expires_at, entry.key)

    def peek_key(self, key: str) -> Lease[T] | None:
        """What :meth:`register` would replace for ``key``, without counting as a use."""
        token = self._by_key.get(key) if key else None
        if token is None:
            return None
        entry = self._by_token[token]
        return Lease(token, entry.value, entry.expires_at, entry.key)

    def touch(self, token: int, used_at: float) -> None:
        """Record a use that happened at ``used_at`` (reported late by a worker's cache).

        A use counts only if the entry was still alive then; an expired entry is never revived.
        """
        entry = self._by_token.get(token)
        if entry is not None and entry.expires_at > used_at:
            entry.expires_at = max(entry.expires_at, used_at + self.ttl_s)

    def _allocate(self) -> int:
        """The next token, wrapping at uint32 (the wire type) past tokens still in use."""
        while True:
            token = self._next_token
            self._next_token = token + 1 if token < _MAX_TOKEN else 1
            if token not in self._by_token:
                return token

    def _drop(self, token: int, entry: _Entry[T]) -> None:
        del self._by_token[token]
        if entry.key and self._by_key.get(entry.key) == token:
            del self._by_key[entry.key]

    def _maybe_sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY_S
        for token, entry in [(t, e) for t, e in self._by_token.items() if e.expires_at <= now]:
            self._drop(token, entry)


def random_first_token() -> int:
    """Where a runner's token space starts: uniform over 1..2^32-1 (0 is never a token)."""
    return 1 + secrets.randbelow(_MAX_TOKEN)
