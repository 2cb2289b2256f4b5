"""The conf-token registry: what a PrepareConf produced, found again by the token APISIX sends.

Tokens count up from 1; the same idempotent key gets the same token back. An entry lives for
1.2 x ``APISIX_CONF_EXPIRE_TIME`` after its last use (what the Go runner does), because APISIX can
keep using a token for up to ~1.9 x that value (shared-dict TTL + per-worker lrucache TTL). An
expired or unknown token is answered with CONF_TOKEN_NOT_FOUND, which makes APISIX re-prepare.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

#: APISIX hard-codes 3600 s; tokens must outlive its caches.
DEFAULT_CONF_EXPIRE_S = 3600.0
TTL_FACTOR = 1.2
#: Sweep expired entries at most this often, so an idle registry does not grow forever.
_SWEEP_EVERY_S = 60.0


@dataclass(slots=True)
class _Entry(Generic[T]):
    key: str
    value: T
    expires_at: float


class ConfTokenRegistry(Generic[T]):
    """Token -> prepared conf, with a TTL refreshed on every use."""

    def __init__(
        self,
        conf_expire_s: float = DEFAULT_CONF_EXPIRE_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        first_token: int = 1,
        token_step: int = 1,
    ) -> None:
        if conf_expire_s <= 0:
            raise ValueError("APISIX_CONF_EXPIRE_TIME must be a positive number of seconds")
        self.ttl_s = conf_expire_s * TTL_FACTOR
        self._clock = clock
        self._first_token = first_token
        self._next_token = first_token
        self._token_step = token_step
        self._by_token: dict[int, _Entry[T]] = {}
        self._by_key: dict[str, int] = {}
        self._next_sweep = clock() + _SWEEP_EVERY_S

    def __len__(self) -> int:
        return len(self._by_token)

    def register(self, key: str, value: T) -> int:
        """Store a prepared conf and return its token; a known non-empty key keeps its token."""
        now = self._clock()
        self._maybe_sweep(now)
        if key:
            token = self._by_key.get(key)
            if token is not None:
                entry = self._by_token[token]
                entry.value = value
                entry.expires_at = now + self.ttl_s
                return token
        token = self._allocate()
        self._by_token[token] = _Entry(key, value, now + self.ttl_s)
        if key:
            self._by_key[key] = token
        return token

    def lookup(self, token: int) -> T | None:
        """The conf for a token, refreshing its TTL; None if unknown or expired."""
        entry = self._by_token.get(token)
        if entry is None:
            return None
        now = self._clock()
        if entry.expires_at <= now:
            self._drop(token, entry)
            return None
        entry.expires_at = now + self.ttl_s
        return entry.value

    def _allocate(self) -> int:
        token = self._next_token
        self._next_token += self._token_step
        if self._next_token > 0xFFFFFFFF:  # uint32 on the wire; wrap past the oldest ones
            self._next_token = self._first_token
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
