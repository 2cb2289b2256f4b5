"""The sans-IO ext-plugin protocol: frames, FlatBuffers messages and the conversation rules.

Runner side::

    conn = Connection(Role.RUNNER)
    conn.receive_data(await reader.read(65536))
    event = conn.next_event()  # a message, NEED_DATA or ConnectionClosed()
    writer.write(conn.send(HTTPReqCallResponse(id=event.id)))
"""

from kafkaupstream.protocol.codec import (
    decode_apisix_message,
    decode_runner_message,
    encode_message,
    message_type,
)
from kafkaupstream.protocol.connection import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    Event,
    Role,
    State,
)
from kafkaupstream.protocol.errors import (
    FrameTooLarge,
    InvalidMessage,
    MalformedFrame,
    MessageTooLarge,
    ProtocolError,
    UnexpectedMessage,
)
from kafkaupstream.protocol.frames import MAX_PAYLOAD, Frame, FrameBuffer, encode_frame
from kafkaupstream.protocol.messages import (
    ApisixMessage,
    Entries,
    ErrorCode,
    ErrorResponse,
    ExtraInfoRequest,
    ExtraInfoResponse,
    HTTPReqCallRequest,
    HTTPReqCallResponse,
    HTTPRespCallRequest,
    HTTPRespCallResponse,
    Message,
    MessageType,
    Method,
    PrepareConfRequest,
    PrepareConfResponse,
    ReqBody,
    RespBody,
    Rewrite,
    RunnerMessage,
    Stop,
    TextEntry,
    Var,
)

__all__ = [
    "MAX_PAYLOAD",
    "NEED_DATA",
    "ApisixMessage",
    "Connection",
    "ConnectionClosed",
    "Entries",
    "ErrorCode",
    "ErrorResponse",
    "Event",
    "ExtraInfoRequest",
    "ExtraInfoResponse",
    "Frame",
    "FrameBuffer",
    "FrameTooLarge",
    "HTTPReqCallRequest",
    "HTTPReqCallResponse",
    "HTTPRespCallRequest",
    "HTTPRespCallResponse",
    "InvalidMessage",
    "MalformedFrame",
    "Message",
    "MessageTooLarge",
    "MessageType",
    "Method",
    "PrepareConfRequest",
    "PrepareConfResponse",
    "ProtocolError",
    "ReqBody",
    "RespBody",
    "Rewrite",
    "Role",
    "RunnerMessage",
    "State",
    "Stop",
    "TextEntry",
    "UnexpectedMessage",
    "Var",
    "decode_apisix_message",
    "decode_runner_message",
    "encode_frame",
    "encode_message",
    "message_type",
]
