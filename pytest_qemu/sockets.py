"""Connecting to the UNIX sockets QEMU listens on."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

_RETRY_INTERVAL = 0.005


def connect_unix(path: Path, deadline: float, keep_trying: Callable[[], bool]) -> socket.socket:
    """A stream socket connected to *path*, retried until *deadline*.

    QEMU creates its socket files before it listens on them, so the first
    attempts may find no file or be refused. Retrying stops early once
    *keep_trying* says the listener is gone (QEMU exited); the last error is
    raised then, or at the deadline.
    """
    while True:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(str(path))
            return connection
        except OSError:
            connection.close()
            if not keep_trying() or time.monotonic() >= deadline:
                raise
        time.sleep(_RETRY_INTERVAL)


def listen_unix(path: Path) -> socket.socket:
    """A stream socket listening at *path* (replacing a stale file), to hand to QEMU.

    A client can connect at once: the connection waits in the backlog until
    QEMU, which inherits the socket, accepts it.
    """
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(1)
    except OSError:
        listener.close()
        raise
    return listener
