"""Routes and consumers in APISIX's own formats, and route matching the way APISIX's router does.

Formats: an Admin API body (one route or a list), an Admin API answer (``{"key", "value",
"modifiedIndex"}`` or ``{"list": [...]}``), a consumer body (``{"username", "plugins"}``), and the
standalone ``apisix.yaml`` (``routes:`` / ``consumers:``, ending with ``#END``).

Matching follows ``radixtree_host_uri`` (APISIX 3.x's default router): routes whose ``host``
matches come before routes without one (an exact host before a wildcard), then an exact ``uri``
before a prefix (``/p/*``), a longer prefix before a shorter one, then higher ``priority``; the
first candidate whose ``methods`` accept the request wins. No candidate means 404.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PRE_REQ = "ext-plugin-pre-req"
POST_REQ = "ext-plugin-post-req"
KEY_AUTH = "key-auth"
#: What the gateway emulates; any other plugin on a route is refused rather than silently ignored.
SUPPORTED_PLUGINS = frozenset({PRE_REQ, POST_REQ, KEY_AUTH})
METHODS = frozenset(
    {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE"}
)


class RouteConfigError(ValueError):
    """A route, consumer or file APISIX would refuse (the message names the field)."""


@dataclass(frozen=True, slots=True)
class ExtPlugin:
    """One ``ext-plugin-pre-req`` / ``ext-plugin-post-req`` instance."""

    name: str
    conf: tuple[tuple[str, str], ...] | None
    allow_degradation: bool = False


@dataclass(frozen=True, slots=True)
class KeyAuth:
    header: str = "apikey"
    query: str = "apikey"
    hide_credentials: bool = False


@dataclass(frozen=True, slots=True)
class Upstream:
    nodes: tuple[tuple[str, int, int], ...]
    scheme: str = "http"
    pass_host: str = "pass"
    upstream_host: str | None = None
    timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Route:
    id: str
    uris: tuple[str, ...]
    version: int = 1
    name: str = ""
    methods: frozenset[str] | None = None
    hosts: tuple[str, ...] = ()
    priority: int = 0
    pre_req: ExtPlugin | None = None
    post_req: ExtPlugin | None = None
    key_auth: KeyAuth | None = None
    upstream: Upstream | None = None


@dataclass(frozen=True, slots=True)
class Consumer:
    username: str
    key: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    routes: tuple[Route, ...] = ()
    consumers: tuple[Consumer, ...] = ()

    def merged(self, other: GatewayConfig) -> GatewayConfig:
        routes = self.routes + other.routes
        ids = [r.id for r in routes]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise RouteConfigError(f"duplicate route id(s) {dupes}")
        return GatewayConfig(routes, self.consumers + other.consumers)

    def consumer_for_key(self, key: str) -> Consumer | None:
        return next((c for c in self.consumers if c.key is not None and c.key == key), None)


# --- parsing ------------------------------------------------------------------------------------


def _ext_plugin(name: str, raw: object, where: str) -> ExtPlugin:
    if not isinstance(raw, Mapping):
        raise RouteConfigError(f"{where}.plugins.{name} must be an object")
    conf = raw.get("conf")
    entries: tuple[tuple[str, str], ...] | None = None
    if conf is not None:
        if not isinstance(conf, list) or not conf:
            raise RouteConfigError(f"{where}.plugins.{name}.conf must be a non-empty array")
        items = []
        for i, entry in enumerate(conf):
            at = f"{where}.plugins.{name}.conf[{i}]"
            if not isinstance(entry, Mapping) or "name" not in entry or "value" not in entry:
                raise RouteConfigError(f"{at} needs both 'name' and 'value'")
            if not isinstance(entry["name"], str) or not 1 <= len(entry["name"]) <= 128:
                raise RouteConfigError(f"{at}.name must be a string of 1..128 characters")
            if not isinstance(entry["value"], str):
                raise RouteConfigError(
                    f"{at}.value must be a string: APISIX custom-plugin confs are strings, "
                    "so write the JSON configuration as a JSON-encoded string"
                )
            items.append((entry["name"], entry["value"]))
        entries = tuple(items)
    degrade = raw.get("allow_degradation", False)
    if not isinstance(degrade, bool):
        raise RouteConfigError(f"{where}.plugins.{name}.allow_degradation must be a boolean")
    return ExtPlugin(name, entries, degrade)


def _key_auth(raw: object, where: str) -> KeyAuth:
    if not isinstance(raw, Mapping):
        raise RouteConfigError(f"{where}.plugins.key-auth must be an object")
    return KeyAuth(
        header=str(raw.get("header", "apikey")),
        query=str(raw.get("query", "apikey")),
        hide_credentials=bool(raw.get("hide_credentials", False)),
    )


def _upstream(raw: object, where: str) -> Upstream:
    if not isinstance(raw, Mapping):
        raise RouteConfigError(f"{where}.upstream must be an object")
    nodes_raw = raw.get("nodes")
    nodes: list[tuple[str, int, int]] = []
    if isinstance(nodes_raw, Mapping):
        for addr, weight in nodes_raw.items():
            host, _, port = str(addr).rpartition(":")
            if not host or not port.isdigit():
                raise RouteConfigError(f"{where}.upstream.nodes key {addr!r} is not host:port")
            nodes.append((host.strip("[]"), int(port), int(weight)))
    elif isinstance(nodes_raw, list):
        for node in nodes_raw:
            if not isinstance(node, Mapping) or "host" not in node:
                raise RouteConfigError(f"{where}.upstream.nodes entries need 'host'")
            nodes.append((str(node["host"]), int(node.get("port", 80)), int(node.get("weight", 1))))
    if not nodes:
        raise RouteConfigError(f"{where}.upstream.nodes is empty")
    scheme = str(raw.get("scheme", "http"))
    if scheme != "http":
        raise RouteConfigError(f"{where}.upstream.scheme {scheme!r}: the gateway proxies http only")
    timeout = raw.get("timeout") or {}
    read_s = float(timeout.get("read", 60)) if isinstance(timeout, Mapping) else 60.0
    return Upstream(
        tuple(nodes), scheme, str(raw.get("pass_host", "pass")), raw.get("upstream_host"), read_s
    )


def parse_route(obj: Mapping[str, Any], *, default_id: str, version: int = 1) -> Route:
    """One route object (the Admin API body) into a :class:`Route`."""
    route_id = str(obj.get("id", default_id))
    where = f"route {route_id!r}"
    uris: list[str] = []
    if "uri" in obj:
        uris.append(obj["uri"])
    uris.extend(obj.get("uris") or ())
    if not uris or not all(isinstance(u, str) and u.startswith("/") for u in uris):
        raise RouteConfigError(f"{where} needs 'uri' or 'uris', each starting with '/'")
    methods = obj.get("methods")
    if methods is not None:
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise RouteConfigError(f"{where}.methods has unknown method(s) {bad}")
    hosts = [obj["host"]] if "host" in obj else list(obj.get("hosts") or ())
    for forbidden in ("service_id", "upstream_id", "plugin_config_id"):
        if forbidden in obj:
            raise RouteConfigError(f"{where}.{forbidden}: not supported by the gateway; inline it")
    plugins = obj.get("plugins") or {}
    if not isinstance(plugins, Mapping):
        raise RouteConfigError(f"{where}.plugins must be an object")
    unknown = sorted(set(plugins) - SUPPORTED_PLUGINS)
    if unknown:
        raise RouteConfigError(
            f"{where}.plugins {unknown}: the gateway emulates only {sorted(SUPPORTED_PLUGINS)}"
        )
    return Route(
        id=route_id,
        uris=tuple(uris),
        version=int(obj.get("modifiedIndex", version)),
        name=str(obj.get("name", "")),
        methods=frozenset(methods) if methods is not None else None,
        hosts=tuple(str(h).lower() for h in hosts),
        priority=int(obj.get("priority", 0)),
        pre_req=_ext_plugin(PRE_REQ, plugins[PRE_REQ], where) if PRE_REQ in plugins else None,
        post_req=_ext_plugin(POST_REQ, plugins[POST_REQ], where) if POST_REQ in plugins else None,
        key_auth=_key_auth(plugins[KEY_AUTH], where) if KEY_AUTH in plugins else None,
        upstream=_upstream(obj["upstream"], where) if "upstream" in obj else None,
    )


def parse_consumer(obj: Mapping[str, Any]) -> Consumer:
    username = obj.get("username")
    if not isinstance(username, str) or not username:
        raise RouteConfigError("consumer needs a 'username'")
    plugins = obj.get("plugins") or {}
    key_auth = plugins.get(KEY_AUTH) if isinstance(plugins, Mapping) else None
    key = key_auth.get("key") if isinstance(key_auth, Mapping) else None
    if key_auth is not None and not isinstance(key, str):
        raise RouteConfigError(f"consumer {username!r}: plugins.key-auth.key must be a string")
    return Consumer(username, key)


def config_from_standalone(data: Mapping[str, Any], *, version: int = 1) -> GatewayConfig:
    """``apisix.yaml``'s structure; ids default to ``routes#<n>`` as in standalone mode."""
    routes_raw = data.get("routes") or []
    consumers_raw = data.get("consumers") or []
    if not isinstance(routes_raw, list) or not isinstance(consumers_raw, list):
        raise RouteConfigError("'routes' and 'consumers' must be lists")
    routes = tuple(
        parse_route(r, default_id=f"routes#{i}", version=version)
        for i, r in enumerate(routes_raw, 1)
        if r is not None  # `routes: [ - ]` is APISIX's own empty placeholder
    )
    return GatewayConfig(routes, tuple(parse_consumer(c) for c in consumers_raw))


def config_from_admin_json(data: object, *, default_id: str = "1") -> GatewayConfig:
    """An Admin API body or answer: route(s), consumer(s), or ``{"list": [...]}``."""
    if isinstance(data, Mapping) and ("routes" in data or "consumers" in data):
        return config_from_standalone(data)
    if isinstance(data, Mapping) and isinstance(data.get("list"), list):
        data = data["list"]
    items = data if isinstance(data, list) else [data]
    routes: list[Route] = []
    consumers: list[Consumer] = []
    for i, item in enumerate(items, 1):
        if not isinstance(item, Mapping):
            raise RouteConfigError(f"item {i} is not an object")
        version = int(item.get("modifiedIndex", 1))
        key = str(item.get("key", ""))
        if isinstance(item.get("value"), Mapping):  # an Admin API answer wraps the object
            item = {"id": key.rsplit("/", 1)[-1], **item["value"]}
        if "username" in item and "uri" not in item and "uris" not in item:
            consumers.append(parse_consumer(item))
            continue
        rid = default_id if len(items) == 1 else f"{default_id}-{i}"
        routes.append(parse_route(item, default_id=rid, version=version))
    return GatewayConfig(tuple(routes), tuple(consumers))


def _yaml_load(text: str, where: str) -> Any:
    try:
        import yaml
    except ImportError as exc:  # PyYAML is in the dev extra, not a runtime dependency
        raise RouteConfigError(f"{where}: reading YAML needs PyYAML (pip install pyyaml)") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RouteConfigError(f"{where}: invalid YAML: {exc}") from exc


def load_config(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> GatewayConfig:
    """Load and merge files: ``*.yaml``/``*.yml`` as apisix.yaml, anything else as JSON."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    config = GatewayConfig()
    for p in paths:
        path = Path(p)
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            # APISIX ignores a file until its last bytes say #END (it may be half written).
            if not text.rstrip().endswith("#END"):
                raise RouteConfigError(f"{path}: missing the '#END' line APISIX requires")
            data = _yaml_load(text, str(path)) or {}
            if not isinstance(data, Mapping):
                raise RouteConfigError(f"{path}: top level must be a mapping")
            # Standalone APISIX uses the file's change time as every item's modifiedIndex.
            part = config_from_standalone(data, version=int(path.stat().st_ctime))
        else:
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise RouteConfigError(f"{path}: invalid JSON: {exc}") from exc
            part = config_from_admin_json(data, default_id=path.stem)
        config = config.merged(part)
    return config


# --- matching -----------------------------------------------------------------------------------


def _host_rank(route: Route, host: str) -> tuple[int, int] | None:
    """(0, -len) for a matching host (exact beats wildcard), (1, 0) for a host-less route."""
    if not route.hosts:
        return (1, 0)
    best: tuple[int, int] | None = None
    for pattern in route.hosts:
        if pattern == host:
            rank = (0, -(1 << 16))
        elif pattern.startswith("*.") and host.endswith(pattern[1:]):
            rank = (0, -len(pattern))
        else:
            continue
        best = rank if best is None else min(best, rank)
    return best


def _uri_rank(route: Route, path: str) -> tuple[int, int] | None:
    best: tuple[int, int] | None = None
    for uri in route.uris:
        if uri.endswith("*"):
            prefix = uri[:-1]
            rank = (1, -len(prefix)) if path.startswith(prefix) else None
        else:
            rank = (0, 0) if path == uri else None
        if rank is not None:
            best = rank if best is None else min(best, rank)
    return best


@dataclass(slots=True)
class Router:
    routes: Sequence[Route] = field(default_factory=tuple)

    def match(self, method: str, path: str, host: str) -> Route | None:
        """The route APISIX would pick for (method, normalised path, host without port)."""
        host = host.lower()
        candidates = []
        for order, route in enumerate(self.routes):
            host_rank = _host_rank(route, host)
            uri_rank = _uri_rank(route, path) if host_rank is not None else None
            if host_rank is None or uri_rank is None:
                continue
            candidates.append(((*host_rank, *uri_rank, -route.priority, order), route))
        candidates.sort(key=lambda c: c[0])
        for _, route in candidates:
            if route.methods is None or method in route.methods:
                return route
        return None
