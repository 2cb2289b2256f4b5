"""The messages of APISIX's ext-plugin RPC (proto v0.6.1) as immutable values.

Strings on the wire are raw bytes (APISIX does not promise UTF-8), so names and values are
decoded as UTF-8 with ``surrogateescape``: any byte sequence survives a decode/encode round trip
and decoding never fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class MessageType(IntEnum):
    """The frame type byte."""

    RPC_ERROR = 0
    PREPARE_CONF = 1
    HTTP_REQ_CALL = 2
    EXTRA_INFO = 3
    HTTP_RESP_CALL = 4


class Method(IntEnum):
    """A6.Method: the 15 HTTP methods APISIX can encode."""

    GET = 0
    HEAD = 1
    POST = 2
    PUT = 3
    DELETE = 4
    MKCOL = 5
    COPY = 6
    MOVE = 7
    OPTIONS = 8
    PROPFIND = 9
    PROPPATCH = 10
    LOCK = 11
    UNLOCK = 12
    PATCH = 13
    TRACE = 14


class ErrorCode(IntEnum):
    """A6.Err.Code."""

    BAD_REQUEST = 0
    SERVICE_UNAVAILABLE = 1
    CONF_TOKEN_NOT_FOUND = 2


@dataclass(frozen=True, slots=True)
class TextEntry:
    """A name/value pair; ``value=None`` (absent on the wire) differs from ``""``."""

    name: str
    value: str | None = None


Entries = tuple[TextEntry, ...]


# --- APISIX -> runner -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrepareConfRequest:
    """Type 1 from APISIX. ``conf`` is None when the route's plugin config has no ``conf`` key."""

    conf: Entries | None
    key: str = ""


@dataclass(frozen=True, slots=True)
class HTTPReqCallRequest:
    """Type 2 from APISIX: one HTTP request to decide on. ``method`` is the raw enum value."""

    id: int
    conf_token: int
    method: int = Method.GET
    path: str = ""
    src_ip: bytes = b""
    args: Entries = ()
    headers: Entries = ()


@dataclass(frozen=True, slots=True)
class HTTPRespCallRequest:
    """Type 4 from APISIX (ext-plugin-post-resp): the upstream's answer."""

    id: int
    conf_token: int
    status: int = 0
    headers: Entries = ()


@dataclass(frozen=True, slots=True)
class ExtraInfoResponse:
    """Type 3 from APISIX. ``result`` is None when APISIX had nothing (unknown var, no body)."""

    result: bytes | None


# --- runner -> APISIX -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrepareConfResponse:
    conf_token: int


@dataclass(frozen=True, slots=True)
class Stop:
    """Answer the client directly; status 0 means 200 to APISIX."""

    status: int = 0
    headers: Entries = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Change the request and let it continue upstream. None = field absent."""

    path: str | None = None
    headers: Entries = ()
    args: Entries = ()
    resp_headers: Entries = ()
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class HTTPReqCallResponse:
    """Type 2 to APISIX. ``action=None`` means continue unchanged."""

    id: int
    action: Stop | Rewrite | None = None


@dataclass(frozen=True, slots=True)
class HTTPRespCallResponse:
    """Type 4 to APISIX. Non-empty ``headers`` replace the upstream's whole header set."""

    id: int
    status: int = 0
    headers: Entries = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Var:
    """Ask APISIX for ``ctx.var[name]``."""

    name: str


@dataclass(frozen=True, slots=True)
class ReqBody:
    """Ask APISIX for the whole request body."""


@dataclass(frozen=True, slots=True)
class RespBody:
    """Ask APISIX for the whole upstream response body (HTTPRespCall only)."""


@dataclass(frozen=True, slots=True)
class ExtraInfoRequest:
    """Type 3 to APISIX, legal only while APISIX waits for an HTTPReqCall/HTTPRespCall answer."""

    info: Var | ReqBody | RespBody


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """Type 0 to APISIX, whatever the request type was."""

    code: ErrorCode


Message = (
    PrepareConfRequest
    | HTTPReqCallRequest
    | HTTPRespCallRequest
    | ExtraInfoResponse
    | PrepareConfResponse
    | HTTPReqCallResponse
    | HTTPRespCallResponse
    | ExtraInfoRequest
    | ErrorResponse
)

# Messages APISIX sends (decoded by the runner, encoded by the fake APISIX) and the reverse.
ApisixMessage = PrepareConfRequest | HTTPReqCallRequest | HTTPRespCallRequest | ExtraInfoResponse
RunnerMessage = (
    PrepareConfResponse
    | HTTPReqCallResponse
    | HTTPRespCallResponse
    | ExtraInfoRequest
    | ErrorResponse
)
