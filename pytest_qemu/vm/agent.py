"""The host side of the guest command agent (see ``guest/files/agent``).

The agent listens on a virtio-serial port that QEMU connects to a UNIX socket:
commands never share the console the user reads, and nothing uses TCP.
"""

from __future__ import annotations

import base64
import itertools
import math
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

#: The virtio-serial port name the guest agent looks for.
AGENT_PORT_NAME = "org.pytest-qemu.agent"

_PING_INTERVAL = 0.25


class AgentUnavailable(Exception):
    """The agent did not answer in time, or the connection broke."""


def _encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii") if data else "-"


def _decode(field: str) -> bytes:
    return b"" if field == "-" else base64.b64decode(field)


class AgentChannel:
    """A request/reply connection to one guest's command agent."""

    def __init__(self, socket_path: Path) -> None:
        self._socket_path = socket_path
        self._socket: socket.socket | None = None
        self._buffer = b""
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def connect(self) -> None:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(str(self._socket_path))
        except OSError:
            connection.close()
            raise
        self._socket = connection

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def wait_ready(self, timeout: float, is_running: Callable[[], bool]) -> str:
        """Ping until the agent answers; return the boot-time setup status it reports.

        The status is the guest setup script's exit status as text, or ``-``
        if the guest ran none (a guest of the user's own, say).

        Pings are repeated because bytes sent before the guest opens its port,
        or before a restored VM resumes, can be lost.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                request_id = next(self._ids)
                self._send(f"PING {request_id}\n")
                answer_by = min(deadline, time.monotonic() + _PING_INTERVAL)
                # Any answer will do: earlier pings may be answered only now.
                if (line := self._receive_line("PONG ", answer_by, is_running)) is not None:
                    fields = line.split(" ")
                    return fields[2] if len(fields) > 2 else "-"
                if time.monotonic() >= deadline:
                    raise AgentUnavailable(f"no answer from the guest agent within {timeout:g} s")

    def run(
        self,
        command: str,
        stdin: bytes,
        timeout: float | None,
        is_running: Callable[[], bool],
    ) -> tuple[int, bytes, bytes]:
        """Run *command* with ``sh`` in the guest; return (status, stdout, stderr).

        The guest kills the command when *timeout* passes; if no reply comes a
        few seconds after that, :class:`AgentUnavailable` is raised.
        """
        guest_timeout = 0 if timeout is None else max(1, math.ceil(timeout))
        with self._lock:
            request_id = next(self._ids)
            self._send(
                f"RUN {request_id} {guest_timeout} {_encode(command.encode())} {_encode(stdin)}\n"
            )
            deadline = math.inf if timeout is None else time.monotonic() + timeout + 10
            line = self._receive_line(f"DONE {request_id} ", deadline, is_running)
        if line is None:
            raise AgentUnavailable("the guest agent did not reply")
        _, _, status, stdout, stderr = line.split(" ")
        return int(status), _decode(stdout), _decode(stderr)

    def _send(self, text: str) -> None:
        if self._socket is None:
            raise AgentUnavailable("not connected to the guest agent")
        try:
            self._socket.sendall(text.encode("ascii"))
        except OSError as error:
            raise AgentUnavailable(f"cannot write to the guest agent: {error}") from error

    def _receive_line(
        self, prefix: str, deadline: float, is_running: Callable[[], bool]
    ) -> str | None:
        """The first line starting with *prefix*; other lines (stale replies) are dropped."""
        assert self._socket is not None
        wanted = prefix.encode("ascii")
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                if line.startswith(wanted):
                    return line.decode("ascii")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not is_running():
                raise AgentUnavailable("QEMU exited")
            self._socket.settimeout(min(remaining, 0.5))
            try:
                chunk = self._socket.recv(65536)
            except TimeoutError:
                continue
            except OSError as error:
                raise AgentUnavailable(f"the agent connection broke: {error}") from error
            if not chunk:
                raise AgentUnavailable("QEMU closed the agent connection")
            self._buffer += chunk
