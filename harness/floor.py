"""The floor: the least a Python unix-socket server can do to hold APISIX's side of the RPC.

It answers PrepareConf with a canned token and each HTTPReqCall with one ExtraInfo ReqBody round
trip then a canned Stop, reading nothing but frame headers: no plugin, no decoding, no Kafka. The
runner's throughput is judged as a fraction of this one's, on the same machine and event loop.

``python -m harness.floor --socket PATH [--loop asyncio|uvloop] [--streams]`` serves until
SIGTERM/SIGINT; ``--streams`` is the streams floor, the simplest correct server
(``asyncio.start_unix_server``, one ``readexactly`` per header and payload, ``drain`` per answer).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from typing import cast

from kafkaupstream.protocol import (
    ExtraInfoRequest,
    HTTPReqCallResponse,
    HTTPRespCallResponse,
    PrepareConfResponse,
    ReqBody,
    Stop,
    TextEntry,
    encode_message,
)

_PREPARED = encode_message(PrepareConfResponse(conf_token=1))
_ASK_BODY = encode_message(ExtraInfoRequest(ReqBody()))
_STOP = encode_message(
    HTTPReqCallResponse(
        id=0,
        action=Stop(200, (TextEntry("Content-Type", "application/json"),), b'{"status":"ok"}'),
    )
)
_RESP_CALL_DONE = encode_message(HTTPRespCallResponse(id=0))
#: Frame type -> canned answer. APISIX sends 3 only to answer our ExtraInfo request.
_ANSWERS = {1: _PREPARED, 2: _ASK_BODY, 3: _STOP, 4: _RESP_CALL_DONE}


class FloorProtocol(asyncio.Protocol):
    """One APISIX connection: whole frames in, canned frames out."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        transport = self._transport
        assert transport is not None
        while len(buf) >= 4:
            end = 4 + ((buf[1] << 16) | (buf[2] << 8) | buf[3])
            if len(buf) < end:
                return
            answer = _ANSWERS.get(buf[0])
            del buf[:end]
            if answer is None:
                transport.close()
                return
            transport.write(answer)


async def _stream_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The streams floor: the simplest correct server, one frame read and answered at a time."""
    try:
        while True:
            header = await reader.readexactly(4)
            await reader.readexactly(int.from_bytes(header[1:], "big"))
            answer = _ANSWERS.get(header[0])
            if answer is None:
                return
            writer.write(answer)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        writer.close()


async def serve(path: str, streams: bool = False) -> None:
    """Serve on ``path`` until SIGTERM or SIGINT (``streams``: with StreamReader/Writer)."""
    loop = asyncio.get_running_loop()
    if os.path.exists(path):
        os.unlink(path)
    server: asyncio.AbstractServer
    if streams:
        server = await asyncio.start_unix_server(_stream_client, path, backlog=1024)
    else:
        server = await loop.create_unix_server(FloorProtocol, path, backlog=1024)
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    print(
        f"floor listening on {path} (pid {os.getpid()}, {type(loop).__module__} loop)",
        file=sys.stderr,
        flush=True,
    )
    async with server:
        await stopped.wait()
    if os.path.exists(path):
        os.unlink(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.floor",
        description="A bare unix-socket server answering the ext-plugin RPC with canned frames.",
    )
    parser.add_argument("--socket", required=True, metavar="PATH")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop to serve with (default %(default)s)",
    )
    parser.add_argument(
        "--streams",
        action="store_true",
        help="serve with asyncio.start_unix_server and StreamReader/Writer (the streams floor)",
    )
    args = parser.parse_args(argv)
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.socket, args.streams))
    return 0


if __name__ == "__main__":
    sys.exit(main())
