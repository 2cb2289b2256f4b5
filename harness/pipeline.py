"""APISIX's request pipeline: router, ext-plugins through the fake APISIX, key-auth, upstream.

Phases run in APISIX's order: ``ext-plugin-pre-req`` (rewrite phase, priority 12000), ``key-auth``
(rewrite, 2500), ``ext-plugin-post-req`` (access, -3000), then the upstream. What APISIX itself
answers is reproduced: 404 ``{"error_msg":"404 Route Not Found"}``, key-auth's 401s, and nginx's
HTML pages for 503 (runner unreachable; no upstream once the plugins let a request through),
502/504 (upstream down or slow).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from harness.fake_apisix import ClientRequest, FakeApisix, PluginConf
from harness.http11 import Headers, HTTPError, Request, Response, error_page
from harness.phases import Exchange, host_without_port, key_auth, normalize_target, src_ip_bytes
from harness.routes import ExtPlugin, GatewayConfig, Router
from harness.upstream import Balancer, UpstreamFailure, UpstreamRequest, proxy

log = logging.getLogger(__name__)

TEXT_PLAIN = "text/plain; charset=utf-8"  # nginx default_type + APISIX's `charset utf-8`
TEXT_HTML = "text/html; charset=utf-8"
NOT_FOUND_BODY = b'{"error_msg":"404 Route Not Found"}\n'


@dataclass(frozen=True, slots=True)
class Answer(Response):
    """What the client gets, and who produced it: runner, apisix, upstream or nginx."""

    source: str = "apisix"
    route_id: str | None = None


def page(status: int, route_id: str | None = None, source: str = "apisix") -> Answer:
    """An answer with no body of its own: nginx's HTML page for ``status``."""
    return Answer(status, (("Content-Type", TEXT_HTML),), error_page(status), source, route_id)


class Pipeline:
    """Routes one request and runs its phases; owns the fake APISIX's RPC pools."""

    def __init__(self, config: GatewayConfig, apisix: FakeApisix) -> None:
        self.config = config
        self.apisix = apisix
        self._router = Router(config.routes)
        self._balancer = Balancer()

    async def dispatch(
        self, request: Request, peer: tuple[str, int], local: tuple[str, int]
    ) -> tuple[Answer, float]:
        """The client's answer (without ``Server``) and the seconds spent in ext-plugin RPCs."""
        try:
            uri, query = normalize_target(request.target)
        except HTTPError as exc:
            return page(exc.status, source="nginx"), 0.0
        host = host_without_port(request.header("host") or "")
        route = self._router.match(request.method, uri, host)
        if route is None:
            return Answer(404, (("Content-Type", TEXT_PLAIN),), NOT_FOUND_BODY), 0.0
        exchange = Exchange.begin(request, route, uri, query, peer, local)
        return await self._phases(exchange), exchange.runner_s

    async def _phases(self, exchange: Exchange) -> Answer:
        route = exchange.route
        if route.pre_req is not None:
            answer = await self._ext_plugin(exchange, route.pre_req)
            if answer is not None:
                return answer
        if route.key_auth is not None:
            refused = key_auth(exchange, route.key_auth, self.config)
            if refused is not None:
                status, body = refused
                return Answer(status, (("Content-Type", TEXT_PLAIN),), body, "apisix", route.id)
        if route.post_req is not None:
            answer = await self._ext_plugin(exchange, route.post_req)
            if answer is not None:
                return answer
        return await self._upstream(exchange)

    async def _ext_plugin(self, exchange: Exchange, plugin: ExtPlugin) -> Answer | None:
        route = exchange.route
        conf = PluginConf(
            conf=plugin.conf,
            conf_type="route",
            conf_id=route.id,
            plugin_name=plugin.name,
            version=route.version,
        )
        client = ClientRequest(
            method=exchange.request.method,
            path=exchange.rpc_path,
            args=tuple(exchange.args),
            headers=tuple(exchange.headers),
            body=exchange.body or None,
            src_ip=src_ip_bytes(exchange.peer[0]),
            vars=exchange.vars(),
        )
        t0 = time.monotonic()
        result = await self.apisix.request(conf, client)
        exchange.runner_s += time.monotonic() - t0
        if result.action == "error":
            if result.status == 503 and plugin.allow_degradation:
                log.warning(
                    "event=allow_degradation plugin=%s route=%s cause=%r "
                    "(Plugin Runner is wrong, allow degradation)",
                    plugin.name,
                    route.id,
                    result.error,
                )
                return None
            log.error(
                "event=ext_plugin_failed plugin=%s route=%s status=%d cause=%r",
                plugin.name,
                route.id,
                result.status,
                result.error,
            )
            return page(result.status, route.id)
        if result.action == "stop":
            return stop_answer(result.status, result.headers, result.body, route.id)
        if result.action == "rewrite" and result.rewrite is not None:
            exchange.apply_rewrite(result.rewrite)
        return None

    async def _upstream(self, exchange: Exchange) -> Answer:
        route = exchange.route
        if route.upstream is None:
            # APISIX 3.x's set_by_route() returns 503 "missing upstream configuration in Route
            # or Service" to core.response.exit(503) without a body: nginx's HTML page.
            log.error(
                "event=no_upstream route=%s cause=%r",
                route.id,
                "missing upstream configuration in Route or Service",
            )
            return page(503, route.id)
        request = UpstreamRequest(
            method=exchange.request.method,
            target=exchange.upstream_target,
            headers=tuple(exchange.headers),
            body=exchange.body,
            client_host=exchange.header("host") or exchange.local[0],
            remote_addr=exchange.peer[0],
            server_port=exchange.local[1],
        )
        try:
            answer = await proxy(route.upstream, self._balancer.pick(route.upstream), request)
        except UpstreamFailure as exc:
            log.error(
                "event=upstream_failed route=%s status=%d cause=%r", route.id, exc.status, str(exc)
            )
            return page(exc.status, route.id, source="nginx")
        headers = [(n, v) for n, v in answer.headers if n.lower() != "server"]
        seen: set[str] = set()
        for name, value in exchange.resp_headers:  # first occurrence sets, later ones append
            wanted = name.lower()
            if wanted not in seen:
                headers = [(n, v) for n, v in headers if n.lower() != wanted]
                seen.add(wanted)
            headers.append((name, value))
        return Answer(answer.status, tuple(headers), answer.body, "upstream", route.id)


def stop_answer(status: int, headers: Headers, body: bytes, route_id: str) -> Answer:
    """A Stop as the client sees it (APISIX replaces ``Server`` with its own)."""
    kept = tuple((n, v) for n, v in headers if n.lower() != "server")
    nginx_page = error_page(status)
    if not body and nginx_page:
        # APISIX prints no empty body: nginx then sends its own page for the status.
        kept = tuple((n, v) for n, v in kept if n.lower() != "content-type")
        return Answer(status, (("Content-Type", TEXT_HTML), *kept), nginx_page, "runner", route_id)
    if not any(n.lower() == "content-type" for n, _ in kept):
        kept = (("Content-Type", TEXT_PLAIN), *kept)
    return Answer(status, kept, body, "runner", route_id)
