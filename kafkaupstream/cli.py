"""``kafkaupstream``: the command APISIX spawns (``run``) and the operator's tools."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import TypeVar

from kafkaupstream import __version__
from kafkaupstream.core import describe
from kafkaupstream.logs import configure_logging, log_event
from kafkaupstream.worker_count import usable_cpus, worker_count

#: A flag's number type: ``int`` for counts, ``float`` for seconds.
_Number = TypeVar("_Number", int, float)

log = logging.getLogger("kafkaupstream")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafkaupstream",
        description="Apache APISIX external plugin runner that produces request bodies to Kafka.",
    )
    parser.add_argument(
        "--version", action="version", version=f"kafkaupstream {__version__}, {describe()}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="serve APISIX's ext-plugin RPC (what ext-plugin.cmd names)",
        description=(
            "Serve APISIX's ext-plugin RPC on the unix socket named by APISIX_LISTEN_ADDRESS "
            "(unix:/path), keeping conf tokens for 1.2 x APISIX_CONF_EXPIRE_TIME seconds."
        ),
    )
    run.add_argument(
        "--listen",
        default=None,
        help="override APISIX_LISTEN_ADDRESS (unix:/path/to/socket)",
    )
    run.add_argument(
        "--shutdown-timeout",
        type=float,
        default=0.8,
        help="seconds for draining and flushing on SIGTERM (APISIX kills at 1 s; default 0.8)",
    )
    run.add_argument("--log-level", default=os.environ.get("KAFKAUPSTREAM_LOG_LEVEL", "INFO"))
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("KAFKAUPSTREAM_LOG_FORMAT", "text"),
    )
    run.add_argument(
        "--test-plugins",
        action="store_true",
        help="also serve the built-in 'stop' plugin (answers a fixed Stop; for tests and demos)",
    )
    run.add_argument(
        "--workers",
        type=_at_least_one,
        default=None,
        metavar="N",
        help="worker processes accepting on the one socket, sharing the conf tokens; 1 = a "
        "single process, no fork (default: KAFKAUPSTREAM_WORKERS, else the CPUs this process "
        f"may use: its affinity capped by the cgroup cpu.max quota, {usable_cpus()} here)",
    )
    run.add_argument(
        "--max-in-flight",
        type=_at_least_one,
        default=None,
        metavar="N",
        help="requests each worker holds at once from the arrival of their body to their "
        "answer; more get 503 backpressure with Retry-After (default: "
        "KAFKAUPSTREAM_MAX_IN_FLIGHT, else 10000)",
    )
    run.add_argument(
        "--max-awaiting-body",
        type=_at_least_one,
        default=None,
        metavar="N",
        help="requests each worker lets wait for APISIX to read their body at once (slow "
        "uploads); more get 503 backpressure with Retry-After (default: "
        "KAFKAUPSTREAM_MAX_AWAITING_BODY, else 10000)",
    )
    run.add_argument(
        "--max-producers",
        type=_at_least_one,
        default=None,
        metavar="N",
        help="Kafka producers each worker holds at most (one per distinct route config); a "
        "request needing one more gets 503 too_many_producers (default: "
        "KAFKAUPSTREAM_MAX_PRODUCERS, else 100)",
    )
    run.add_argument(
        "--producer-grace",
        type=_seconds,
        default=None,
        metavar="S",
        help="a producer no request used for the conf-token lifetime (1.2 x "
        "APISIX_CONF_EXPIRE_TIME) plus S seconds is flushed and closed (default: "
        "KAFKAUPSTREAM_PRODUCER_GRACE, else 60)",
    )
    run.add_argument(
        "--stall-after",
        type=_seconds,
        default=None,
        metavar="S",
        help="/health is degraded when a producer has had records pending (or timing out) for "
        "S seconds without one successful delivery (default: KAFKAUPSTREAM_STALL_AFTER, else 10)",
    )
    run.add_argument(
        "--worker-timeout",
        type=_seconds,
        default=None,
        metavar="S",
        help="with several workers, the parent kills and replaces a worker that sent no "
        "heartbeat (one a second) for S seconds, at least 3 (default: "
        "KAFKAUPSTREAM_WORKER_TIMEOUT, else 10)",
    )
    run.add_argument(
        "--metrics-listen",
        default=os.environ.get("KAFKAUPSTREAM_METRICS_LISTEN", ""),
        metavar="HOST:PORT",
        help="serve Prometheus /metrics, /health and /ready for the whole runner on this TCP "
        "address (default: KAFKAUPSTREAM_METRICS_LISTEN, else off)",
    )
    run.add_argument(
        "--spool-dir",
        default=os.environ.get("KAFKAUPSTREAM_SPOOL_DIR", ""),
        metavar="DIR",
        help="where delivery 'spool' routes keep their records until Kafka has them, one file "
        "per worker (default: KAFKAUPSTREAM_SPOOL_DIR, else no spool)",
    )
    run.add_argument(
        "--spool-max-bytes",
        type=_at_least_one,
        default=None,
        metavar="N",
        help="bytes each worker's spool may hold (records and dead letters); more get 503 "
        "backpressure (default: KAFKAUPSTREAM_SPOOL_MAX_BYTES, else 1 GiB)",
    )
    run.add_argument(
        "--spool-max-age",
        type=float,
        default=None,
        metavar="S",
        help="/health is degraded while a spool's oldest record is older (default: "
        "KAFKAUPSTREAM_SPOOL_MAX_AGE, else 60)",
    )
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser(
        "check-config",
        help="validate a route configuration and print its effective settings",
        description=(
            "Validate a kafkaupstream route configuration exactly as the runner will at "
            "PrepareConf (librdkafka checks every property, without connecting) and print the "
            "effective settings with secrets redacted. Exit code 0 when valid, 1 otherwise."
        ),
    )
    check.add_argument(
        "config",
        metavar="CONFIG",
        help="the conf value JSON, a conf entry, or an Admin API route; @FILE reads a file, "
        "- reads standard input",
    )
    check.add_argument(
        "--connect",
        action="store_true",
        help="also ask the brokers for metadata (exit 1 when none answers)",
    )
    check.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait with --connect (default 5)"
    )
    check.set_defaults(func=_cmd_check_config)
    return parser


def _cmd_check_config(args: argparse.Namespace) -> int:
    from kafkaupstream.check_config import check

    return check(
        args.config, connect=args.connect, timeout=args.timeout, out=sys.stdout, err=sys.stderr
    )


def _at_least_one(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {count}")
    return count


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {value!r}") from None
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return seconds


def _flag_or_env(value: _Number | None, variable: str) -> _Number | str | None:
    """The flag's value when given, else the environment variable's text (None when unset)."""
    return value if value is not None else os.environ.get(variable)


def _cmd_run(args: argparse.Namespace) -> int:
    from kafkaupstream.runner import RunnerOptions, serve

    configure_logging(args.log_level, args.log_format)
    listen = args.listen or os.environ.get("APISIX_LISTEN_ADDRESS", "")
    expire = os.environ.get("APISIX_CONF_EXPIRE_TIME", "3600")
    try:
        options = RunnerOptions.from_environment(
            listen=listen,
            conf_expire=expire,
            shutdown_timeout_s=args.shutdown_timeout,
            test_plugins=args.test_plugins,
            workers=worker_count(args.workers, os.environ),
            max_in_flight=_flag_or_env(args.max_in_flight, "KAFKAUPSTREAM_MAX_IN_FLIGHT"),
            max_awaiting_body=_flag_or_env(
                args.max_awaiting_body, "KAFKAUPSTREAM_MAX_AWAITING_BODY"
            ),
            metrics_listen=args.metrics_listen,
            max_producers=_flag_or_env(args.max_producers, "KAFKAUPSTREAM_MAX_PRODUCERS"),
            producer_grace=_flag_or_env(args.producer_grace, "KAFKAUPSTREAM_PRODUCER_GRACE"),
            stall_after=_flag_or_env(args.stall_after, "KAFKAUPSTREAM_STALL_AFTER"),
            worker_timeout=_flag_or_env(args.worker_timeout, "KAFKAUPSTREAM_WORKER_TIMEOUT"),
            spool_dir=args.spool_dir,
            spool_max_bytes=_flag_or_env(args.spool_max_bytes, "KAFKAUPSTREAM_SPOOL_MAX_BYTES"),
            spool_max_age=_flag_or_env(args.spool_max_age, "KAFKAUPSTREAM_SPOOL_MAX_AGE"),
        )
    except ValueError as exc:
        log_event(log, logging.ERROR, "bad_environment", cause=str(exc))
        return 2
    code = serve(options)
    # Everything was flushed or purged and counted: exit without the interpreter's teardown,
    # which would destroy every librdkafka client one after another (seconds with hundreds).
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
