"""Per-process prepared confs in front of the one token store (local, or the parent's service).

What can be shared between processes is the *conf list* a PrepareConf carried (plugin name and
value strings). What a plugin's ``prepare(value)`` made of it cannot: it may hold process-local
things (a Kafka producer, its poll thread) that must be created after fork. So every process keeps
``token -> (conf list, prepared states, expiry)`` and asks the store only on a local miss: the hot
path (an HTTPReqCall whose token this process already knows) is one dict lookup, and the use is
reported to the store later, in a batch (see ``TokenStore.touch``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from kafkaupstream.api import Plugin, PreparedConf
from kafkaupstream.logs import log_event
from kafkaupstream.observability.labels import route_label
from kafkaupstream.server.tokens import ConfTokenRegistry, Lease

log = logging.getLogger(__name__)

#: One conf entry as shared between processes: (plugin name, value); an absent value is "".
ConfEntry = tuple[str, str]
ConfList = tuple[ConfEntry, ...]
Prepared = tuple[PreparedConf, ...]
ChangeListener = Callable[[int], None]

#: Drop local entries past their expiry at most this often (frees prepared states).
_SWEEP_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class PrepareConfLimits:
    """What one PrepareConf may carry; more is answered BAD_REQUEST (APISIX then answers 503).

    A route's ``ext-plugin-*`` conf list holds a few entries; bounding it keeps one hostile or
    broken PrepareConf from holding the event loop (20,000 entries took 10.7 s to prepare).
    The byte limit applies to the frame's payload, before it is decoded.
    """

    entries: int = 64
    payload_bytes: int = 1 << 20


class StoreUnavailable(Exception):
    """The token store cannot be reached (the parent is gone or did not answer in time)."""


class TokenStore(Protocol):
    """Where tokens are allocated and conf lists kept, for every process of one runner."""

    ttl_s: float

    async def register(self, key: str, confs: ConfList) -> Lease[ConfList]:
        """Allocate (or, for a known non-empty key, reuse) a token for ``confs``."""
        ...

    async def lookup(self, token: int) -> Lease[ConfList] | None:
        """The conf list for a token, counting as a use; None when unknown or expired."""
        ...

    def touch(self, token: int, used_at: float) -> None:
        """Report a use served from a local cache; may be applied later, never blocks."""
        ...

    def subscribe(self, listener: ChangeListener) -> None:
        """Call ``listener(token)`` when another process replaced that token's conf list."""
        ...


class LocalTokenStore:
    """The store of a single-process runner: the registry itself, no IPC."""

    def __init__(self, registry: ConfTokenRegistry[ConfList]) -> None:
        self._registry = registry
        self.ttl_s = registry.ttl_s

    async def register(self, key: str, confs: ConfList) -> Lease[ConfList]:
        return self._registry.register(key, confs)

    async def lookup(self, token: int) -> Lease[ConfList] | None:
        return self._registry.lookup(token)

    def touch(self, token: int, used_at: float) -> None:
        self._registry.touch(token, used_at)

    def subscribe(self, listener: ChangeListener) -> None:
        """Nothing to do: this process is the only one registering."""


@dataclass(slots=True)
class _Local:
    confs: ConfList
    prepared: Prepared
    expires_at: float


class PreparedConfs:
    """This process's ``token -> prepared confs``; the store is asked only on a miss."""

    def __init__(
        self,
        plugins: Mapping[str, Plugin],
        store: TokenStore,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._plugins = plugins
        self._store = store
        self._clock = clock
        self._ttl_s = store.ttl_s
        self._by_token: dict[int, _Local] = {}
        self._next_sweep = clock() + _SWEEP_EVERY_S
        store.subscribe(self.invalidate)

    def __len__(self) -> int:
        return len(self._by_token)

    def get(self, token: int) -> Prepared | None:
        """The hot path: a token this process prepared and still holds, refreshed; else None.

        The local expiry is the store's as of the last exchange with it, moved on by local uses
        that reach the store within one flush interval; so a local hit is a token the store
        still holds (the one accepted race is described in ``token_service.py``).
        """
        entry = self._by_token.get(token)
        if entry is None:
            return None
        now = self._clock()
        if entry.expires_at <= now:
            return None
        entry.expires_at = now + self._ttl_s
        self._store.touch(token, now)
        return entry.prepared

    async def resolve(self, token: int) -> Prepared | None:
        """:meth:`get`, else the store's conf list prepared here; None if the token is dead."""
        prepared = self.get(token)
        if prepared is not None:
            return prepared
        lease = await self._store.lookup(token)
        if lease is None:
            self._by_token.pop(token, None)
            return None
        entry = self._by_token.get(token)
        if entry is None or entry.confs != lease.value:
            entry = _Local(lease.value, self._prepare(lease.value, lease.key), lease.expires_at)
            self._by_token[token] = entry
            log_event(log, logging.DEBUG, "conf_adopted", token=token, plugins=len(entry.prepared))
        else:
            entry.expires_at = lease.expires_at
        self._maybe_sweep()
        return entry.prepared

    async def register(self, key: str, confs: ConfList) -> int:
        """A PrepareConf: prepare here (warning once about unknown plugins), then share."""
        unknown = [name for name, _value in confs if name not in self._plugins]
        if unknown:
            log_event(
                log,
                logging.WARNING,
                "unknown_plugins",
                names=",".join(unknown),
                key=key,
                action="skipped",
            )
        prepared = self._prepare(confs, key)
        lease = await self._store.register(key, confs)
        self._by_token[lease.token] = _Local(confs, prepared, lease.expires_at)
        self._maybe_sweep()
        log_event(
            log, logging.INFO, "conf_prepared", key=key, token=lease.token, plugins=len(prepared)
        )
        return lease.token

    def invalidate(self, token: int) -> None:
        """Another process gave this token a new conf list: prepare again on next use."""
        self._by_token.pop(token, None)

    def _prepare(self, confs: ConfList, key: str) -> Prepared:
        """Every known plugin of the list, in order; unknown names are skipped."""
        route = route_label(key)
        prepared: list[PreparedConf] = []
        for name, value in confs:
            plugin = self._plugins.get(name)
            if plugin is not None:
                prepared.append(PreparedConf(plugin, plugin.prepare(value), route))
        return tuple(prepared)

    def _maybe_sweep(self) -> None:
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY_S
        for token in [t for t, e in self._by_token.items() if e.expires_at <= now]:
            del self._by_token[token]
