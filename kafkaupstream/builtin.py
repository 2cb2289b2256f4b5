"""A built-in plugin that answers with a Stop: proves the RPC path without Kafka.

Conf value (JSON, every field optional)::

    {"status": 403, "body": "text", "headers": {"X-A": "1"},
     "echo_body": true, "echo_vars": ["remote_addr"], "echo_pid": true, "delay_ms": 50}

With ``echo_body`` the answer body is the request body (fetched through ExtraInfo); with
``echo_vars`` the answer carries one ``X-Var-<name>`` header per variable; ``echo_pid`` adds
``X-Worker-Pid`` (which worker process answered); ``delay_ms`` holds the answer back (keeps
exchanges in flight for shutdown tests).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any

from kafkaupstream.api import Answer, HTTPRequest, Plugin


@dataclass(frozen=True, slots=True)
class _StopConf:
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    echo_body: bool = False
    echo_vars: tuple[str, ...] = ()
    echo_pid: bool = False
    delay_ms: int = 0
    error: str = ""


def _parse(value: str) -> _StopConf:
    try:
        raw = json.loads(value) if value.strip() else {}
    except ValueError:
        return _StopConf(status=500, error="conf value is not JSON")
    if not isinstance(raw, dict):
        return _StopConf(status=500, error="conf value must be a JSON object")
    headers = raw.get("headers") or {}
    return _StopConf(
        status=int(raw.get("status", 200)),
        body=str(raw.get("body", "")).encode(),
        headers=tuple((str(k), str(v)) for k, v in headers.items()),
        echo_body=bool(raw.get("echo_body", False)),
        echo_vars=tuple(str(v) for v in raw.get("echo_vars", ())),
        echo_pid=bool(raw.get("echo_pid", False)),
        delay_ms=int(raw.get("delay_ms", 0)),
    )


class StopPlugin(Plugin):
    """Answers every request with a fixed (or echoed) Stop."""

    name = "stop"

    def prepare(self, value: str) -> Any:
        try:
            return _parse(value)
        except (TypeError, ValueError, AttributeError):
            return _StopConf(status=500, error="conf value has a field of the wrong type")

    async def handle(self, state: Any, request: HTTPRequest) -> Answer | None:
        conf: _StopConf = state
        if conf.error:
            return Answer(500, json.dumps({"error": conf.error}).encode())
        headers = list(conf.headers)
        for name in conf.echo_vars:
            value = await request.var(name)
            headers.append((f"X-Var-{name}", "<nil>" if value is None else value.decode("latin-1")))
        if conf.echo_pid:
            headers.append(("X-Worker-Pid", str(os.getpid())))
        body = await request.body() if conf.echo_body else conf.body
        if conf.delay_ms:
            await asyncio.sleep(conf.delay_ms / 1000)
        return Answer(conf.status, body, tuple(headers))
