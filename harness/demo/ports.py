"""Refuse a taken port up front, naming the option that changes it."""

from __future__ import annotations

import errno
import socket


class PortUnavailable(RuntimeError):
    """A port the user asked for cannot be listened on; the message names the option."""


def ensure_port_free(host: str, port: int, *, what: str, option: str) -> None:
    """Raise :class:`PortUnavailable` unless ``what`` could listen on (host, port); 0 is any."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As asyncio and Tansu do: a port in TIME_WAIT is free, one with a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortUnavailable(
                    f"port {port} on {host} is already in use, so the {what} cannot listen "
                    f"there: stop whatever holds it, or pick another port with {option} PORT "
                    "(0 picks a free one)"
                ) from None
            raise PortUnavailable(
                f"the {what} cannot listen on {host}:{port} ({exc.strerror}); "
                f"change it with {option}"
            ) from None
