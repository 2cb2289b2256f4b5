"""The plugin interface: what the server hands a plugin and what a plugin answers.

The server owns sockets and frames; a plugin sees only an :class:`HTTPRequest` (whose body and
variables it fetches lazily through ``await``) and returns an :class:`Answer` or ``None``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kafkaupstream.protocol.messages import Entries

#: Asks APISIX for one piece of ExtraInfo; returns None when APISIX has nothing.
InfoFetcher = Callable[[], Awaitable[bytes | None]]
VarFetcher = Callable[[str], Awaitable[bytes | None]]


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer the runner gives in APISIX's place (becomes a Stop action)."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


class HTTPRequest:
    """One client request as APISIX described it; body and vars are fetched once, on demand."""

    __slots__ = (
        "_body",
        "_fetch_body",
        "_fetch_var",
        "_vars",
        "args",
        "headers",
        "id",
        "method",
        "path",
        "src_ip",
    )

    def __init__(
        self,
        *,
        id: int,
        method: int,
        path: str,
        src_ip: bytes,
        args: Entries,
        headers: Entries,
        fetch_body: InfoFetcher,
        fetch_var: VarFetcher,
    ) -> None:
        self.id = id
        self.method = method
        self.path = path
        self.src_ip = src_ip
        self.args = args
        self.headers = headers
        self._fetch_body = fetch_body
        self._fetch_var = fetch_var
        self._body: bytes | None = None
        self._vars: dict[str, bytes | None] = {}

    def header(self, name: str) -> str | None:
        """The first value of a header, matched case-insensitively (APISIX lower-cases names)."""
        wanted = name.lower()
        for entry in self.headers:
            if entry.name.lower() == wanted:
                return entry.value
        return None

    async def body(self) -> bytes:
        """The whole request body (``b""`` when there is none); one ExtraInfo round trip at most."""
        if self._body is None:
            self._body = await self._fetch_body() or b""
        return self._body

    async def var(self, name: str) -> bytes | None:
        """``ctx.var[name]`` from APISIX, cached per request."""
        if name not in self._vars:
            self._vars[name] = await self._fetch_var(name)
        return self._vars[name]


@dataclass(frozen=True, slots=True)
class PreparedConf:
    """What a plugin made of one conf entry at PrepareConf time, and the route it serves."""

    plugin: Plugin
    state: Any = field(default=None)
    #: The metrics label of the PrepareConf key (the APISIX route id); the server counts the
    #: plugin's answers under it.
    route: str = ""


class Plugin(ABC):
    """A plugin the runner dispatches to by the conf entry's ``name``."""

    name: str

    @abstractmethod
    def prepare(self, value: str) -> Any:
        """Parse a conf ``value`` once per PrepareConf.

        Must not raise for bad input: return a state that makes :meth:`handle` answer the error,
        so one bad route never affects another.
        """

    @abstractmethod
    async def handle(self, state: Any, request: HTTPRequest) -> Answer | None:
        """Answer the request (Stop) or return None to let the next plugin / upstream have it."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Called once on the process's event loop before it accepts connections."""

    async def close(self, timeout: float) -> None:  # noqa: B027 - optional hook
        """Called once on shutdown, after in-flight requests finished; bounded by ``timeout``."""
