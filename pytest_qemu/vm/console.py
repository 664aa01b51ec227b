"""The serial console: QEMU logs it to a file; we read it back with an expect-style API."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pytest_qemu.errors import ConsoleTimeout

__all__ = ["Console", "ConsoleTimeout"]

_POLL_INTERVAL = 0.02
_CONTROL_SEQUENCE = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_])")


class Console:
    """Everything the guest printed on its serial console, and a way to type into it.

    QEMU writes the console to :attr:`log_path` from the first byte of the boot,
    whether or not anyone reads it. :meth:`expect` searches it from a cursor
    that advances past each match, like ``pexpect``.
    """

    def __init__(self, log_path: Path, socket_path: Path, is_running: Callable[[], bool]) -> None:
        self.log_path = log_path
        #: QEMU's socket for the console (one client at a time).
        self.socket_path = socket_path
        self._is_running = is_running
        self._cursor = 0
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None

    def text(self) -> str:
        """The whole console output so far."""
        try:
            return self.log_path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 30) -> str:
        """The last *lines* lines of console output, without terminal control sequences
        (a shell's cursor queries, colours)."""
        clean = _CONTROL_SEQUENCE.sub("", self.text()).replace("\r", "")
        return "\n".join(clean.splitlines()[-lines:])

    def expect(self, pattern: str | re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        """Wait until *pattern* (a regular expression) appears after the last match.

        Raises :class:`ConsoleTimeout` with the unmatched output if it does not
        appear within *timeout* seconds or the VM stops first.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            with self._lock:
                match = regex.search(text, self._cursor)
                if match:
                    self._cursor = match.end()
                    return match
                cursor = self._cursor
            running = self._is_running()
            if not running or time.monotonic() >= deadline:
                reason = "the VM stopped" if not running else f"{timeout:g} s passed"
                unmatched = text[cursor:][-2000:]
                raise ConsoleTimeout(
                    f"{regex.pattern!r} did not appear on the console before {reason}; "
                    f"console output since the last match:\n{unmatched}"
                )
            time.sleep(_POLL_INTERVAL)

    def write(self, data: str | bytes) -> None:
        """Send *data* to the guest's serial console (a shell listens there)."""
        payload = data.encode() if isinstance(data, str) else data
        with self._lock:
            if self._socket is None:
                connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                connection.connect(str(self.socket_path))
                self._socket = connection
            self._socket.sendall(payload)

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
