"""``python -m harness.load``: the command line of the load generator."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import secrets
import sys
from collections.abc import Callable, Sequence

from harness.load.bodies import SHAPES, make_template
from harness.load.driver import LoadOptions, RunResult, SetupError, run_load
from harness.load.report import format_text, plot, summarize
from harness.load.rpc import RouteConf
from harness.load.verify import verify_broker

EPILOG = """\
examples:
  # the runner on its socket, kafkaupstream plugin, async delivery, records checked afterwards
  python -m harness.load --socket /tmp/runner.sock --verify-broker 127.0.0.1:9092 --topic t \\
      --delivery async --duration 10
  # any plugin and conf value; 2000 req/s open loop; JSON summary for scripts
  python -m harness.load --socket /tmp/runner.sock --plugin stop \\
      --conf '{"status":200,"body":"ok"}' --rate 2000 --json
  # the gateway over HTTP
  python -m harness.load --url http://127.0.0.1:9080/kafkaupstream -c 32 --requests 100000
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kafkaupstream-harness load",
        description="Drive the runner over APISIX's ext-plugin RPC (as nginx workers do), or the "
        "gateway over HTTP, and summarise throughput, latency and answers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--socket", metavar="PATH", help="the runner's unix socket (RPC mode)")
    target.add_argument("--url", help="http://host:port/path to POST to (HTTP mode)")
    route = p.add_argument_group("route (RPC mode)")
    route.add_argument("--plugin", default="kafkaupstream", help="conf entry name (%(default)s)")
    route.add_argument(
        "--conf",
        help="conf entry value (JSON string); for kafkaupstream it may be "
        "omitted when --verify-broker and --topic are given",
    )
    route.add_argument(
        "--delivery",
        choices=("sync", "async"),
        default="sync",
        help="delivery of the conf built from --verify-broker/--topic",
    )
    route.add_argument(
        "--route-key", default="route#1#ext-plugin-pre-req#1", help="PrepareConf idempotent key"
    )
    route.add_argument("--path", default="/kafkaupstream", help="request path told to the runner")
    load = p.add_argument_group("load")
    load.add_argument(
        "-c",
        "--connections",
        type=_positive(int),
        default=16,
        help="concurrent connections, each one request at a time (default 16)",
    )
    load.add_argument(
        "--rate",
        type=_positive(float),
        help="open loop: requests per second, latency from the due time "
        "(default: closed loop, as fast as answers come)",
    )
    stop = load.add_mutually_exclusive_group()
    stop.add_argument("-d", "--duration", type=_positive(float), help="measured seconds (10)")
    stop.add_argument("-n", "--requests", type=_positive(int), help="measured requests")
    load.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of load before measuring, excluded from stats (default 1)",
    )
    load.add_argument("--body-size", type=_positive(int), default=1024, help="bytes (default 1024)")
    load.add_argument(
        "--batch",
        type=_positive(int),
        default=1,
        metavar="N",
        help="N records a request, as NDJSON lines of --body-size bytes each (a batch route; "
        "the conf built from --topic gets batch ndjson); default 1: one record, one body",
    )
    load.add_argument(
        "--body-shape",
        choices=SHAPES,
        default="json",
        help='json: {"id": ..., "pad": ...}; pretty-json: indented and nested; '
        "bytes: octet-stream (default json)",
    )
    load.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="extra request header (repeatable)",
    )
    load.add_argument(
        "--request-timeout",
        type=_positive(float),
        default=60.0,
        help="give up on an answer after this many seconds, as APISIX does (60)",
    )
    load.add_argument("--run-id", help="id prefix in the bodies (default: random)")
    load.add_argument("--no-uvloop", action="store_true", help="use asyncio's default loop")
    out = p.add_argument_group("output")
    out.add_argument(
        "--verify-broker",
        metavar="BOOTSTRAP",
        help="afterwards, count this run's ids in --topic on this broker",
    )
    out.add_argument("--topic", help="topic to verify (and of the built conf)")
    out.add_argument("--verify-timeout", type=_positive(float), default=30.0)
    out.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    out.add_argument("--plot", metavar="FILE.png", help="latency-over-time chart (matplotlib)")
    out.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live progress on stderr (default: when stderr is a terminal)",
    )
    out.add_argument(
        "--watch-pid",
        action="append",
        default=[],
        metavar="NAME=PID",
        help="also report CPU seconds this process used while measuring (repeatable)",
    )
    return p


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def options_from_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> LoadOptions:
    if bool(args.verify_broker) != bool(args.topic):
        p.error("--verify-broker and --topic go together")
    route = None
    if args.socket:
        conf = args.conf
        if conf is None:
            if args.plugin != "kafkaupstream" or not args.verify_broker:
                p.error("--conf is required (or, for kafkaupstream, --verify-broker and --topic)")
            built = {
                "config": {"bootstrap.servers": args.verify_broker},
                "topic": args.topic,
                "delivery": args.delivery,
            }
            if args.batch > 1:
                built.update(batch="ndjson", max_batch_records=args.batch)
            conf = json.dumps(built)
        route = RouteConf(args.plugin, conf, args.route_key)
    headers = []
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            p.error(f"--header wants NAME:VALUE, got {item!r}")
        headers.append((name.strip(), value.strip()))
    watch = {}
    for item in args.watch_pid:
        name, _, pid = item.rpartition("=")
        if not pid.isdigit():
            p.error(f"--watch-pid wants NAME=PID, got {item!r}")
        watch[name or f"pid{pid}"] = int(pid)
    try:
        bodies = make_template(
            args.run_id or secrets.token_hex(4), args.body_shape, args.body_size, args.batch
        )
    except ValueError as exc:
        p.error(str(exc))
    return LoadOptions(
        bodies=bodies,
        socket=args.socket,
        url=args.url,
        route=route,
        path=args.path,
        headers=tuple(headers),
        connections=args.connections,
        rate=args.rate,
        warmup=max(0.0, args.warmup),
        duration=None if args.requests else (args.duration or 10.0),
        requests=args.requests,
        request_timeout=args.request_timeout,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
        watch=watch,
    )


def _loop_factory(no_uvloop: bool) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    if not no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = options_from_args(parser, args)
    loop_name, factory = _loop_factory(args.no_uvloop)
    # Everything alive now lives for the whole run: keep the collector from rescanning it.
    gc.freeze()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            result: RunResult = runner.run(run_load(options))
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    broker = None
    if args.verify_broker:
        rec = result.recorder
        broker = verify_broker(
            args.verify_broker,
            args.topic,
            options.bodies,
            sent=rec.sent_total,
            expected=rec.accepted_total * options.bodies.records,
            rejected=rec.rejected_ids,
            timeout=args.verify_timeout,
        )
    summary = summarize(result, loop=loop_name, broker=broker)
    print(summary.to_json() if args.json else format_text(summary))
    if args.plot:
        plot(result, args.plot)
    return 1 if broker is not None and broker.missing else 0
