"""``kafkaupstream``: the command APISIX spawns (``run``) and the operator's tools."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from kafkaupstream import __version__
from kafkaupstream.logs import configure_logging

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
    run.set_defaults(func=_cmd_run)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from kafkaupstream.runner import RunnerOptions, run_runner

    configure_logging(args.log_level, args.log_format)
    listen = args.listen or os.environ.get("APISIX_LISTEN_ADDRESS", "")
    expire = os.environ.get("APISIX_CONF_EXPIRE_TIME", "3600")
    try:
        options = RunnerOptions.from_environment(
            listen=listen,
            conf_expire=expire,
            shutdown_timeout_s=args.shutdown_timeout,
            test_plugins=args.test_plugins,
        )
    except ValueError as exc:
        log.error("event=bad_environment cause=%r", str(exc))
        return 2
    return asyncio.run(run_runner(options))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
