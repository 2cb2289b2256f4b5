"""``kafkaupstream``: the command APISIX spawns (``run``) and the operator's tools."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from kafkaupstream import __version__
from kafkaupstream.logs import configure_logging, log_event
from kafkaupstream.worker_count import usable_cpus, worker_count

log = logging.getLogger("kafkaupstream")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafkaupstream",
        description="Apache APISIX external plugin runner that produces request bodies to Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"kafkaupstream {__version__}")
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
        help="requests each worker serves at once; more get 503 backpressure with Retry-After "
        "before their body is read (default: KAFKAUPSTREAM_MAX_IN_FLIGHT, else 10000)",
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
            max_in_flight=(
                args.max_in_flight
                if args.max_in_flight is not None
                else os.environ.get("KAFKAUPSTREAM_MAX_IN_FLIGHT")
            ),
            metrics_listen=args.metrics_listen,
            spool_dir=args.spool_dir,
            spool_max_bytes=(
                args.spool_max_bytes
                if args.spool_max_bytes is not None
                else os.environ.get("KAFKAUPSTREAM_SPOOL_MAX_BYTES")
            ),
            spool_max_age=(
                args.spool_max_age
                if args.spool_max_age is not None
                else os.environ.get("KAFKAUPSTREAM_SPOOL_MAX_AGE")
            ),
        )
    except ValueError as exc:
        log_event(log, logging.ERROR, "bad_environment", cause=str(exc))
        return 2
    return serve(options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
