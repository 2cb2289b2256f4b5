"""What APISIX does to a request between the router and the upstream, minus the RPC itself.

The request as nginx sees it (``$uri``, args, headers, ``ctx.var``), a Rewrite applied in APISIX's
order, and the ``key-auth`` check with APISIX's own answers.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_plus, unquote_to_bytes

from harness.headers import first_header
from harness.http11 import HTTPError, Request
from harness.routes import Consumer, GatewayConfig, KeyAuth, Route
from kafkaupstream.protocol import Rewrite

#: Rewrite ``resp_headers`` APISIX silently ignores when it applies a Rewrite.
RESP_HEADER_EXCLUDED = frozenset(
    {
        "connection",
        "content-length",
        "transfer-encoding",
        "location",
        "server",
        "www-authenticate",
        "content-encoding",
        "content-type",
        "content-location",
        "content-language",
    }
)
#: nginx's NGX_ESCAPE_URI leaves printable ASCII alone except these.
_URI_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "#%?")

Pairs = list[tuple[str, str | None]]


def normalize_target(target: str) -> tuple[str, str | None]:
    """(``$uri``, raw query or None): decoded, slashes merged, dot segments resolved."""
    if target.startswith(("http://", "https://")):  # absolute-form: nginx takes the path
        rest = target.split("://", 1)[1]
        target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    if not target.startswith("/"):
        raise HTTPError(400, f"request target {target[:40]!r} is not a path")
    raw_path, sep, query = target.partition("?")
    decoded = unquote_to_bytes(raw_path)
    if b"\x00" in decoded:
        raise HTTPError(400, "NUL byte in the path")
    out: list[bytes] = []
    for segment in decoded.split(b"/"):
        if segment in (b"", b"."):
            continue
        if segment == b"..":
            if not out:
                raise HTTPError(400, "path climbs above the root")
            out.pop()
            continue
        out.append(segment)
    trailing = decoded.endswith((b"/", b"/.", b"/..")) and bool(out)
    path = b"/" + b"/".join(out) + (b"/" if trailing else b"")
    return path.decode("utf-8", "surrogateescape"), (query if sep else None)


def parse_args(query: str | None) -> Pairs:
    """``ngx.req.get_uri_args``: decoded, ``?z`` has no value, ``?y=`` is empty, order kept."""
    if not query:
        return []
    pairs: Pairs = []
    for part in query.split("&"):
        if not part:
            continue
        name, eq, value = part.partition("=")
        if not name:
            continue
        pairs.append((unquote_plus(name), unquote_plus(value) if eq else None))
    return pairs


def encode_args(pairs: Pairs) -> str:
    return "&".join(
        quote(n, safe="") if v is None else f"{quote(n, safe='')}={quote(v, safe='')}"
        for n, v in pairs
    )


def src_ip_bytes(address: str) -> bytes:
    """``$binary_remote_addr``: 4 bytes for IPv4, 16 for IPv6."""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).packed
    except ValueError:
        return b"\x7f\x00\x00\x01"


def host_without_port(value: str) -> str:
    if value.startswith("["):
        return value[1 : value.find("]")].lower() if "]" in value else value.lower()
    return value.rsplit(":", 1)[0].lower() if value.count(":") == 1 else value.lower()


@dataclass(slots=True)
class Exchange:
    """One request as it travels through the phases; plugins' Rewrites change it in place."""

    request: Request
    route: Route
    peer: tuple[str, int]
    local: tuple[str, int]
    uri: str
    query: str | None
    args: Pairs
    headers: list[tuple[str, str]]
    body: bytes
    upstream_uri: str | None = None
    args_changed: bool = False
    resp_headers: list[tuple[str, str]] = field(default_factory=list)
    consumer: Consumer | None = None
    runner_s: float = 0.0

    @classmethod
    def begin(
        cls,
        request: Request,
        route: Route,
        uri: str,
        query: str | None,
        peer: tuple[str, int],
        local: tuple[str, int],
    ) -> Exchange:
        return cls(
            request,
            route,
            peer,
            local,
            uri,
            query,
            parse_args(query),
            list(request.headers),
            request.body,
        )

    def header(self, name: str) -> str | None:
        return first_header(self.headers, name)

    @property
    def rpc_path(self) -> str:
        """What an HTTPReqCall carries: ``$upstream_uri`` before any ``?``, else ``$uri``."""
        return self.upstream_uri.split("?", 1)[0] if self.upstream_uri else self.uri

    @property
    def upstream_target(self) -> str:
        path = self.upstream_uri or quote(self.uri, safe=_URI_SAFE)
        query = encode_args(self.args) if self.args_changed else self.query
        return f"{path}?{query}" if query else path

    def vars(self) -> dict[str, bytes]:
        """The ``ctx.var`` names a runner commonly asks for (ExtraInfo ``Var``)."""
        out: dict[str, str] = {
            "remote_addr": self.peer[0],
            "remote_port": str(self.peer[1]),
            "server_addr": self.local[0],
            "server_port": str(self.local[1]),
            "server_protocol": self.request.version,
            "scheme": "http",
            "request_method": self.request.method,
            "uri": self.uri,
            "request_uri": self.request.target,
            "is_args": "?" if self.query is not None else "",
            "host": host_without_port(self.header("host") or self.local[0]),
            "hostname": socket.gethostname(),
            "route_id": self.route.id,
        }
        if self.query is not None:
            out["args"] = out["query_string"] = self.query
        if self.route.name:
            out["route_name"] = self.route.name
        if self.consumer is not None:
            out["consumer_name"] = self.consumer.username
        if self.upstream_uri is not None:
            out["upstream_uri"] = self.upstream_uri
        for name, value in self.headers:
            key = "http_" + name.lower().replace("-", "_")
            joiner = "; " if key == "http_cookie" else ", "
            out[key] = f"{out[key]}{joiner}{value}" if key in out else value
        for key, value in (
            ("content_type", "http_content_type"),
            ("content_length", "http_content_length"),
        ):
            if value in out:
                out[key] = out[value]
        for part in (self.query or "").split("&"):  # $arg_x: raw, first match, needs "="
            name, eq, value = part.partition("=")
            if name and eq:
                out.setdefault("arg_" + name.lower(), value)
        for cookie in (self.header("cookie") or "").split(";"):
            name, eq, value = cookie.strip().partition("=")
            if name and eq:
                out.setdefault("cookie_" + name, value)
        return {k: v.encode("utf-8", "surrogateescape") for k, v in out.items()}

    def apply_rewrite(self, rewrite: Rewrite) -> None:
        """APISIX's order: path, headers (last wins), body, resp_headers, args."""
        if rewrite.path is not None:
            self.upstream_uri = quote(rewrite.path, safe=_URI_SAFE)
        for entry in rewrite.headers:
            wanted = entry.name.lower()
            self.headers = [(n, v) for n, v in self.headers if n.lower() != wanted]
            if entry.value is not None:
                self.headers.append((entry.name, entry.value))
        if rewrite.body:
            self.body = rewrite.body
        seen: set[str] = set()
        for entry in rewrite.resp_headers:
            wanted = entry.name.lower()
            if wanted in RESP_HEADER_EXCLUDED or entry.value is None:
                continue
            if wanted not in seen:
                self.resp_headers = [(n, v) for n, v in self.resp_headers if n.lower() != wanted]
                seen.add(wanted)
            self.resp_headers.append((entry.name, entry.value))
        replaced: set[str] = set()
        for entry in rewrite.args:
            if entry.name not in replaced:
                self.args = [(n, v) for n, v in self.args if n != entry.name]
                replaced.add(entry.name)
            if entry.value is not None:
                self.args.append((entry.name, entry.value))
            self.args_changed = True


def key_auth(exchange: Exchange, conf: KeyAuth, config: GatewayConfig) -> tuple[int, bytes] | None:
    """APISIX's key-auth: header, then query argument; (401, body) or None when authenticated."""
    key = exchange.header(conf.header)
    from_header = key is not None
    if key is None:
        key = next((v for n, v in exchange.args if n == conf.query and v is not None), None)
    if key is None:
        return 401, b'{"message":"Missing API key found in request"}\n'
    consumer = config.consumer_for_key(key)
    if consumer is None:
        return 401, b'{"message":"Invalid API key in request"}\n'
    if conf.hide_credentials:
        if from_header:
            wanted = conf.header.lower()
            exchange.headers = [(n, v) for n, v in exchange.headers if n.lower() != wanted]
        else:
            exchange.args = [(n, v) for n, v in exchange.args if n != conf.query]
            exchange.args_changed = True
    exchange.consumer = consumer
    return None
