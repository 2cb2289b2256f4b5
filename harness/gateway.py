"""A real HTTP/1.1 server that plays APISIX for HTTP clients, in front of a real runner.

Routes come in APISIX's formats (:mod:`harness.routes`), the request goes through APISIX's phases
(:mod:`harness.pipeline`) and a route's ext-plugins talk to the runner through
:class:`~harness.fake_apisix.FakeApisix`. Every answer carries ``Server: APISIX/<version>``.
Malformed requests get nginx's 400 (or 413 over 16 MiB, 414, 501, 505) and the connection closes.

    gateway = await serve_gateway("examples/apisix.yaml", "unix:/tmp/runner.sock", port=9080)
    await gateway.serve_forever()

CLI: ``python -m harness.gateway --routes FILE --runner unix:/path --listen 127.0.0.1:9080``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.fake_apisix import FakeApisix
from harness.http11 import MAX_BODY_BYTES, STREAM_LIMIT, HTTPError, Request, read_request, serialize
from harness.pipeline import Answer, Pipeline, page
from harness.replay.recorder import RecordingWriter, recording_hook
from harness.routes import GatewayConfig, load_config
from harness.signals import log_to_stderr, until_stopped

log = logging.getLogger(__name__)

DEFAULT_SERVER_VERSION = "3.17.0"

__all__ = ["Answer", "ExchangeHook", "Gateway", "GatewayThread", "Timing", "serve_gateway"]


@dataclass(frozen=True, slots=True)
class Timing:
    """When the request was fully read (epoch s), ms until the answer was written, ms in RPCs."""

    started: float
    total_ms: float
    runner_ms: float


#: Called after every exchange with (request, answer, timing); may be sync or async.
ExchangeHook = Callable[[Request, Answer, Timing], Awaitable[None] | None]
RoutesSource = GatewayConfig | str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


def _socket_path(runner: str) -> str:
    return runner[len("unix:") :] if runner.startswith("unix:") else runner


class Gateway:
    """The HTTP server; :meth:`handle` runs the pipeline without sockets."""

    def __init__(
        self,
        routes: RoutesSource,
        runner_socket: str,
        *,
        workers: int = 1,
        server_version: str = DEFAULT_SERVER_VERSION,
        max_body_bytes: int = MAX_BODY_BYTES,
        on_exchange: ExchangeHook | None = None,
        keepalive_timeout_s: float = 60.0,
        rpc_read_timeout_s: float = 60.0,
    ) -> None:
        self.config = routes if isinstance(routes, GatewayConfig) else load_config(routes)
        self.runner_socket = _socket_path(runner_socket)
        self.server_header = f"APISIX/{server_version}"
        self.max_body_bytes = max_body_bytes
        self.on_exchange = on_exchange
        self.keepalive_timeout_s = keepalive_timeout_s
        self.apisix = FakeApisix(
            self.runner_socket, workers=workers, read_timeout_s=rpc_read_timeout_s
        )
        self._pipeline = Pipeline(self.config, self.apisix)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Gateway:
        self._server = await asyncio.start_server(
            self._serve_connection, host, port, limit=STREAM_LIMIT
        )
        log.info(
            "event=gateway_listening url=%s runner=unix:%s routes=%d",
            self.url,
            self.runner_socket,
            len(self.config.routes),
        )
        return self

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "start() first"
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        await self.apisix.close()

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- one connection -------------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")[:2]
        local = writer.get_extra_info("sockname")[:2]

        async def send_continue() -> None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()

        try:
            while True:
                try:
                    request = await asyncio.wait_for(
                        read_request(
                            reader, max_body_bytes=self.max_body_bytes, send_continue=send_continue
                        ),
                        self.keepalive_timeout_s,
                    )
                except (EOFError, TimeoutError, ConnectionError):
                    return
                except HTTPError as exc:
                    writer.write(
                        serialize(
                            page(exc.status, source="nginx"),
                            keep_alive=False,
                            trailing=[("Server", self.server_header)],
                        )
                    )
                    await writer.drain()
                    log.info("method=- path=- status=%d cause=%r", exc.status, exc.detail)
                    return
                started, t0 = time.time(), time.monotonic()
                answer, runner_s = await self._handle_safely(request, peer, local)
                keep_alive = request.keep_alive
                writer.write(
                    serialize(
                        answer,
                        keep_alive=keep_alive,
                        head=request.method == "HEAD",
                        trailing=[("Server", self.server_header)],
                    )
                )
                await writer.drain()
                timing = Timing(started, (time.monotonic() - t0) * 1000, runner_s * 1000)
                await self._finish(request, answer, timing)
                if not keep_alive:
                    return
        except ConnectionError:
            return
        except asyncio.CancelledError:
            # close() cancels idle keep-alive connections. Ending normally keeps Python 3.11's
            # stream callback from logging the cancelled handler task as an error.
            return
        finally:
            self._connections.discard(task)
            writer.close()

    async def _handle_safely(
        self, request: Request, peer: tuple[str, int], local: tuple[str, int]
    ) -> tuple[Answer, float]:
        try:
            return await self._pipeline.dispatch(request, peer, local)
        except Exception:
            log.exception("event=gateway_bug method=%s target=%r", request.method, request.target)
            return page(500), 0.0

    async def _finish(self, request: Request, answer: Answer, timing: Timing) -> None:
        log.info(
            "method=%s path=%s status=%d ms=%.1f route=%s source=%s",
            request.method,
            request.target,
            answer.status,
            timing.total_ms,
            answer.route_id,
            answer.source,
        )
        if self.on_exchange is None:
            return
        try:
            result = self.on_exchange(request, answer, timing)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("event=exchange_hook_failed")

    async def handle(
        self,
        request: Request,
        *,
        peer: tuple[str, int] = ("127.0.0.1", 0),
        local: tuple[str, int] = ("127.0.0.1", 9080),
    ) -> Answer:
        """Route ``request`` and run its phases: the answer a client would get (minus Server)."""
        return (await self._pipeline.dispatch(request, peer, local))[0]


async def serve_gateway(
    routes: RoutesSource,
    runner_socket: str,
    host: str = "127.0.0.1",
    port: int = 9080,
    *,
    workers: int = 1,
    server_version: str = DEFAULT_SERVER_VERSION,
    max_body_bytes: int = MAX_BODY_BYTES,
    on_exchange: ExchangeHook | None = None,
    keepalive_timeout_s: float = 60.0,
    rpc_read_timeout_s: float = 60.0,
) -> Gateway:
    """Start a :class:`Gateway` listening on (host, port), like ``asyncio.start_server``."""
    gateway = Gateway(
        routes,
        runner_socket,
        workers=workers,
        server_version=server_version,
        max_body_bytes=max_body_bytes,
        on_exchange=on_exchange,
        keepalive_timeout_s=keepalive_timeout_s,
        rpc_read_timeout_s=rpc_read_timeout_s,
    )
    return await gateway.start(host, port)


class GatewayThread:
    """A gateway on its own event loop in a daemon thread, for synchronous code (tests, demos)."""

    def __init__(
        self,
        routes: RoutesSource,
        runner_socket: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **options: Any,
    ) -> None:
        """``options`` are :func:`serve_gateway`'s keyword arguments."""
        self._args = (routes, runner_socket, host, port)
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="gateway")
        self.gateway: Gateway | None = None

    def start(self, timeout: float = 10.0) -> GatewayThread:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            serve_gateway(*self._args, **self._options), self._loop
        )
        self.gateway = future.result(timeout)
        return self

    @property
    def url(self) -> str:
        assert self.gateway is not None
        return self.gateway.url

    @property
    def port(self) -> int:
        assert self.gateway is not None
        return self.gateway.port

    def stop(self, timeout: float = 10.0) -> None:
        if self.gateway is not None:
            asyncio.run_coroutine_threadsafe(self.gateway.close(), self._loop).result(timeout)
            self.gateway = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        if not self._loop.is_closed() and not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> GatewayThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- CLI ----------------------------------------------------------------------------------------


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``:port`` or ``port`` (host defaults to 127.0.0.1)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "", value
    if not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen {value!r}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafkaupstream-harness gateway",
        description="Play APISIX for real HTTP clients: route requests and call the ext-plugin "
        "runner listening on a unix socket.",
    )
    parser.add_argument(
        "--routes",
        action="append",
        required=True,
        metavar="FILE",
        help="routes/consumers: Admin API JSON (route, consumer, or a list) or a "
        "standalone apisix.yaml ending with #END; repeatable",
    )
    parser.add_argument(
        "--runner",
        required=True,
        metavar="unix:/PATH",
        help="the runner's socket (what APISIX_LISTEN_ADDRESS says)",
    )
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=("127.0.0.1", 9080),
        metavar="HOST:PORT",
        help="address to serve HTTP on (default 127.0.0.1:9080)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="nginx workers to emulate (each has its own RPC pool; default 1)",
    )
    parser.add_argument(
        "--server-version",
        default=DEFAULT_SERVER_VERSION,
        help=f"version in the Server header (default {DEFAULT_SERVER_VERSION})",
    )
    parser.add_argument(
        "--record",
        metavar="FILE",
        help="write every request and its answer to FILE (JSON Lines) for "
        "`kafkaupstream-harness replay`",
    )
    parser.add_argument(
        "--keep-secrets",
        action="store_true",
        help="with --record: keep credentials (default: Authorization, Cookie, apikey, "
        "*token*, *secret*, *password* ... are redacted)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


async def _run(args: argparse.Namespace) -> int:
    writer = None
    if args.record:
        writer = RecordingWriter(args.record, source="gateway", keep_secrets=args.keep_secrets)
    gateway = await serve_gateway(
        args.routes,
        args.runner,
        *args.listen,
        workers=args.workers,
        server_version=args.server_version,
        on_exchange=recording_hook(writer) if writer else None,
    )
    try:
        await until_stopped()
    finally:
        await gateway.close()
        if writer is not None:
            writer.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    log_to_stderr(args.log_level)
    try:
        return asyncio.run(_run(args))
    except (OSError, ValueError) as exc:
        log.error("event=gateway_failed cause=%r", str(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())
