"""``kafkaupstream-harness record``: an HTTP proxy that records what passes through it.

It is the gateway with one catch-all route whose upstream is ``--target`` (a real APISIX, or
anything speaking HTTP/1.1), so requests are read exactly as the gateway reads them and forwarded
as APISIX's ``proxy_pass`` forwards them (``X-Forwarded-*`` added, hop-by-hop headers dropped).
Only the target's own answers are recorded: when the target cannot be reached the client gets
nginx's 502/504 page and nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from harness.gateway import Gateway, parse_listen
from harness.replay.recorder import RecordingWriter, recording_hook
from harness.routes import GatewayConfig, Route, Upstream
from harness.signals import log_to_stderr, until_stopped

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  # in front of APISIX: point clients at :9081 instead of :9080
  kafkaupstream-harness record --listen 127.0.0.1:9081 --target http://127.0.0.1:9080 \\
      --out traffic.jsonl
  kafkaupstream-harness replay traffic.jsonl --target http://127.0.0.1:9080
"""


def parse_target(url: str) -> tuple[str, int]:
    """``http://HOST[:PORT][/]`` into (host, port); anything else is a usage error."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise argparse.ArgumentTypeError(f"{url!r}: expected http://HOST:PORT (no path)")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{url!r}: {exc}") from None
    return parts.hostname, port


def proxy_config(host: str, port: int, *, timeout_s: float = 60.0) -> GatewayConfig:
    """One route for every method and path, proxied to (host, port) with the client's Host."""
    upstream = Upstream(nodes=((host, port, 1),), timeout_s=timeout_s)
    return GatewayConfig(routes=(Route(id="record", uris=("/*",), upstream=upstream),))


def recording_proxy(target: tuple[str, int], writer: RecordingWriter) -> Gateway:
    """A gateway (not yet started) forwarding to ``target`` and recording to ``writer``."""
    # No route has an ext-plugin, so the runner socket is never used.
    return Gateway(
        proxy_config(*target),
        "",
        on_exchange=recording_hook(writer, sources=frozenset({"upstream"})),
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafkaupstream-harness record",
        description="Forward HTTP requests to --target and record each request with its answer "
        "to a JSON Lines file that `kafkaupstream-harness replay` reads.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=("127.0.0.1", 9081),
        metavar="HOST:PORT",
        help="address to accept clients on (default 127.0.0.1:9081; port 0 picks one)",
    )
    parser.add_argument(
        "--target",
        type=parse_target,
        required=True,
        metavar="http://HOST:PORT",
        help="where requests go: APISIX, the gateway, any HTTP/1.1 server",
    )
    parser.add_argument("--out", required=True, metavar="FILE", help="the recording to write")
    parser.add_argument(
        "--keep-secrets",
        action="store_true",
        help="record credentials as they are (default: Authorization, Cookie, apikey, "
        "*token*, *secret*, *password* ... are redacted)",
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser


async def _run(args: argparse.Namespace) -> int:
    with RecordingWriter(args.out, source="proxy", keep_secrets=args.keep_secrets) as writer:
        gateway = await recording_proxy(args.target, writer).start(*args.listen)
        host, port = args.target
        print(
            f"Recording: {gateway.url} -> http://{host}:{port}, writing {args.out}; Ctrl-C stops.",
            flush=True,
        )
        try:
            await until_stopped()
        finally:
            await gateway.close()
        print(f"Recorded {writer.count} exchange(s) to {args.out}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    log_to_stderr(args.log_level)
    try:
        return asyncio.run(_run(args))
    except OSError as exc:
        print(f"kafkaupstream-harness record: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
