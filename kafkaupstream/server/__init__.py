"""The asyncio unix-socket server that speaks APISIX's ext-plugin RPC to plugins."""

from kafkaupstream.server.app import (
    RunnerServer,
    ServerSettings,
    bind_unix_socket,
    parse_listen_address,
)
from kafkaupstream.server.handler import RunnerState
from kafkaupstream.server.supervisor import Supervisor
from kafkaupstream.server.tokens import ConfTokenRegistry

__all__ = [
    "ConfTokenRegistry",
    "RunnerServer",
    "RunnerState",
    "ServerSettings",
    "Supervisor",
    "bind_unix_socket",
    "parse_listen_address",
]
