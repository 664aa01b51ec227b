"""Checking, without touching anything off the host, that no socket holds a port."""

from __future__ import annotations

import socket
from typing import Literal

Protocol = Literal["tcp", "udp"]
PROTOCOLS: tuple[Protocol, ...] = ("tcp", "udp")
# Loopback is where QEMU binds forwards and multicast; "any" conflicts with a
# socket bound to any address, so together they catch every IPv4 holder.
_PROBE_ADDRESSES = ("127.0.0.1", "0.0.0.0")


def port_is_free(port: int, protocol: Protocol) -> bool:
    """Whether *port* can be bound for *protocol* on loopback and on every address.

    The probe sockets are bound without ``SO_REUSEADDR`` (so a listener, or a
    TCP connection lingering in TIME_WAIT, counts as busy) and closed at once.
    Nothing is sent and no connection is made.
    """
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    for address in _PROBE_ADDRESSES:
        try:
            with socket.socket(socket.AF_INET, kind) as probe:
                probe.bind((address, port))
                if kind == socket.SOCK_STREAM:
                    # SO_REUSEPORT listeners can let bind() pass and only clash at listen().
                    probe.listen(1)
        except OSError:
            return False
    return True
