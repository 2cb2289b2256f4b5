"""``kafkaupstream-harness replay FILE``: send recorded requests again, report what changed.

Exit status: 0 when every answer matched, 1 on any difference, 2 on a usage error (bad options,
an unreadable recording or routes file, a placeholder without a value).
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

from harness.replay.compare import DEFAULT_IGNORE, RuleError, Rules
from harness.replay.format import Exchange, RecordingError
from harness.replay.loader import load_recording
from harness.replay.proxy import parse_target
from harness.replay.replayer import PACES, Outcome, ReplayOptions, replay, verify_broker
from harness.replay.report import format_text, summarize
from harness.replay.senders import HTTPSender, PipelineSender, Sender
from harness.replay.template import TemplateError, parse_var, render_file
from harness.routes import RouteConfigError

PROG = "kafkaupstream-harness replay"

EPILOG = f"""\
compared: the status, the body (JSON bodies as JSON, values by path), the headers Content-Type
and Retry-After. Ignored by default: {", ".join(DEFAULT_IGNORE)} (a 200's offset depends on what
the topic held before; --strict compares it). --ignore takes a JSON path into the answer body
(partition, message, items[0].id, *.id), header:NAME, status or body.

examples:
  # against a gateway (or APISIX) over HTTP, and check the records in the broker
  {PROG} traffic.jsonl --target http://127.0.0.1:9080 --verify-broker 127.0.0.1:9092
  # straight to a runner over the RPC, routes from a file with ${{BOOTSTRAP}} placeholders
  {PROG} tests/data/replay/sample.jsonl --runner unix:/tmp/runner.sock \\
      --routes tests/data/replay/routes.yaml --var BOOTSTRAP=127.0.0.1:9092 \\
      --var DEAD_BOOTSTRAP=127.0.0.1:1
  # a browser's HAR export at its recorded pace, 8 at a time, summary as JSON
  {PROG} capture.har --target http://127.0.0.1:9080 --pace recorded -c 8 --json
"""


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        return value

    return parse


def _secret(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    return name, value


def _var(text: str) -> tuple[str, str]:
    try:
        return parse_var(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Replay a recording (kafkaupstream-harness record / gateway --record, or a "
        "HAR file) against a gateway over HTTP or a runner over the RPC, and compare every "
        "answer with the recorded one.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="a .jsonl recording or a HAR 1.2 file")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", type=parse_target, metavar="http://HOST:PORT", help="over HTTP")
    where.add_argument("--runner", metavar="unix:/PATH", help="over the RPC (needs --routes)")
    p.add_argument(
        "--routes",
        action="append",
        default=[],
        metavar="FILE",
        help="with --runner: the routes (apisix.yaml or Admin API JSON); repeatable",
    )
    p.add_argument(
        "--var",
        type=_var,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="fill ${NAME} in the --routes files (e.g. BOOTSTRAP=127.0.0.1:9092); repeatable",
    )
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--pace", choices=PACES, default="fast", help="fast (default) or as recorded")
    pace.add_argument("--rate", type=_positive(float), metavar="N", help="N requests per second")
    p.add_argument(
        "-c",
        "--concurrency",
        type=_positive(int),
        default=1,
        metavar="N",
        help="requests in flight (default 1: the recorded order, strictly)",
    )
    p.add_argument("--ignore", action="append", default=[], metavar="FIELD", help="see below")
    p.add_argument(
        "--strict", action="store_true", help=f"do not ignore {', '.join(DEFAULT_IGNORE)}"
    )
    p.add_argument(
        "--header", action="append", default=[], metavar="NAME", help="also compare this header"
    )
    p.add_argument(
        "--secret",
        type=_secret,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="value for a redacted header or query parameter (default: left out)",
    )
    p.add_argument(
        "--verify-broker",
        metavar="HOST:PORT",
        help="read back the records of every 200 (and batch 207), compare them with the request",
    )
    p.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="GLOB",
        help="only requests whose path matches",
    )
    p.add_argument(
        "--show",
        type=int,
        default=10,
        metavar="N",
        help="requests whose differences are shown (10)",
    )
    p.add_argument(
        "--timeout", type=_positive(float), default=60.0, metavar="S", help="per request (60)"
    )
    p.add_argument("--json", action="store_true", help="the summary as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def _selected(exchange: Exchange, globs: Sequence[str]) -> bool:
    return not globs or any(fnmatch.fnmatchcase(exchange.request.path, g) for g in globs)


def _sender(args: argparse.Namespace, workdir: str) -> Sender:
    if args.target is not None:
        host, port = args.target
        return HTTPSender(host, port, timeout_s=args.timeout)
    values = dict(args.var)
    routes = [render_file(path, values, workdir) for path in args.routes]
    return PipelineSender(routes, args.runner, timeout_s=args.timeout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.runner and not args.routes:
        parser.error("--runner needs --routes FILE")
    if args.target and (args.routes or args.var):
        parser.error("--routes and --var go with --runner (the target routes requests itself)")
    try:
        rules = Rules.build(args.ignore, strict=args.strict, headers=args.header)
        recording = load_recording(args.file)
    except (RuleError, RecordingError) as exc:
        return _usage(str(exc))
    items = [(n, e) for n, e in enumerate(recording.exchanges, 1) if _selected(e, args.path)]
    options = ReplayOptions(
        pace=args.pace,
        rate=args.rate,
        concurrency=args.concurrency,
        rules=rules,
        secrets=dict(args.secret),
        progress=sys.stderr if sys.stderr.isatty() and not args.no_progress else None,
    )
    with tempfile.TemporaryDirectory(prefix="ku-replay-") as workdir:
        try:
            sender = _sender(args, workdir)
        except (TemplateError, RouteConfigError, OSError) as exc:
            return _usage(str(exc))
        started = time.monotonic()
        outcomes = asyncio.run(_run(items, sender, options))
        seconds = time.monotonic() - started
    broker = verify_broker(outcomes, args.verify_broker) if args.verify_broker else None
    summary = summarize(
        outcomes,
        recording=args.file,
        kind=recording.kind,
        target=sender.description,
        rules=rules,
        seconds=seconds,
        skipped=recording.skipped + len(recording.exchanges) - len(items),
        broker=broker,
        show=max(0, args.show),
    )
    print(summary.to_json() if args.json else format_text(summary), flush=True)
    return 1 if summary.differing else 0


async def _run(
    items: Sequence[tuple[int, Exchange]], sender: Sender, options: ReplayOptions
) -> list[Outcome]:
    try:
        return await replay(items, sender, options)
    finally:
        await sender.close()


def _usage(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
