"""HAR 1.2 (browsers' dev tools, mitmproxy) read into the same exchanges as a recording.

Request: method, url (its path and query become the target; the host is kept as ``Host`` when the
entry has none, as HTTP/2 entries do), headers minus HTTP/2 pseudo headers (``:authority``...)
and hop-by-hop ones, ``postData.text`` (base64 when ``postData.encoding`` says so, as mitmproxy
writes binary bodies). Response: status, headers (same filtering), ``content.text`` (base64 per
``content.encoding``); a response without text and a non-zero size was not captured, so its body
is not compared. Entries with status 0 (blocked or failed in the browser) have no answer to
compare and are skipped.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from harness.replay.format import (
    Exchange,
    RecordedAnswer,
    RecordedRequest,
    Recording,
    RecordingError,
)
from harness.upstream import _HOP_BY_HOP

#: RFC 9110 7.6.1 hop-by-hop fields (meaningful for one connection only), as the gateway drops them.
HOP_BY_HOP = _HOP_BY_HOP


def is_har(obj: object) -> bool:
    return (
        isinstance(obj, Mapping) and isinstance(obj.get("log"), Mapping) and "entries" in obj["log"]
    )


def _headers(raw: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list):
        raise RecordingError(f"{where}: headers must be a list")
    out = []
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise RecordingError(f"{where}: header {item!r} has no name")
        name = item["name"]
        if name.startswith(":") or name.lower() in HOP_BY_HOP:
            continue
        out.append((name, str(item.get("value", ""))))
    return tuple(out)


def _text(obj: Mapping[str, Any], where: str) -> bytes:
    text = obj.get("text", "")
    if not isinstance(text, str):
        raise RecordingError(f"{where}: text must be a string")
    if obj.get("encoding") == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RecordingError(f"{where}: invalid base64 ({exc})") from None
    return text.encode("utf-8", "surrogateescape")


def _started(value: object) -> float:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return 0.0


def _entry(entry: Mapping[str, Any], where: str) -> Exchange | None:
    req, resp = entry.get("request"), entry.get("response")
    if not isinstance(req, Mapping) or not isinstance(resp, Mapping):
        raise RecordingError(f"{where}: an entry needs 'request' and 'response'")
    status = int(resp.get("status") or 0)
    if status == 0:
        return None
    url = urlsplit(str(req.get("url", "")))
    if not url.path.startswith("/") and url.path:
        raise RecordingError(f"{where}: url {req.get('url')!r} is not absolute")
    headers = _headers(req.get("headers", []), f"{where} request")
    if url.netloc and not any(n.lower() == "host" for n, _ in headers):
        headers = (("Host", url.netloc), *headers)
    post = req.get("postData")
    body = _text(post, f"{where} postData") if isinstance(post, Mapping) else b""
    content = resp.get("content")
    answer_body: bytes | None = b""
    if isinstance(content, Mapping):
        captured = "text" in content or not content.get("size")
        answer_body = _text(content, f"{where} content") if captured else None
    request = RecordedRequest(
        method=str(req.get("method", "GET")).upper(),
        path=url.path or "/",
        # urlsplit cannot tell "/p?" from "/p"; the raw url can.
        query=url.query if url.query or str(req.get("url", "")).endswith("?") else None,
        headers=headers,
        body=body,
    )
    answer = RecordedAnswer(
        status, _headers(resp.get("headers", []), f"{where} response"), answer_body
    )
    return Exchange(
        request, answer, _started(entry.get("startedDateTime")), float(entry.get("time") or 0)
    )


def read_har(obj: Mapping[str, Any], name: str) -> Recording:
    log = obj["log"]
    entries = log.get("entries")
    if not isinstance(entries, list):
        raise RecordingError(f"{name}: log.entries must be a list")
    exchanges, skipped = [], 0
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise RecordingError(f"{name}: log.entries[{i}] is not an object")
        try:
            exchange = _entry(entry, f"{name}: log.entries[{i}]")
        except (TypeError, ValueError) as exc:
            if isinstance(exc, RecordingError):
                raise
            raise RecordingError(f"{name}: log.entries[{i}]: {exc}") from None
        if exchange is None:
            skipped += 1
        else:
            exchanges.append(exchange)
    # Browsers list entries in start order already; mitmproxy too. Keep it, pacing needs it.
    exchanges.sort(key=lambda e: e.started)
    version = log.get("version", "1.2")
    # Whatever a HAR holds, it holds as the browser saw it: nothing was redacted.
    return Recording(tuple(exchanges), f"har {version}", skipped=skipped)
