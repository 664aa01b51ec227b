"""A synchronous, thread-safe face on ``qemu.qmp``'s asyncio QMP client.

Every client runs on one private event loop in a background thread, so QMP
works from any thread and never touches an event loop the test itself uses
(for example pytest-asyncio's).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from qemu.qmp import EventListener, QMPClient
from qemu.qmp.message import Message

from pytest_qemu.asyncloop import loop_thread

T = TypeVar("T")

#: Called on the event loop's thread with each event's name and data.
EventCallback = Callable[[str, dict[str, Any]], None]


_loop_thread = loop_thread

# qemu.qmp logs every connection it loses as an error, also when QEMU exits as
# expected (a VM killed at teardown, a failed restore). Every failure reaches the
# caller as an exception, with QEMU's stderr in the VM's report: the log lines
# would only send readers of a failed test's "Captured log" down a false trail.
logging.getLogger("qemu.qmp.protocol").setLevel(logging.CRITICAL)


class _CallbackListener(EventListener):
    """Hands events to a plain callback instead of queueing them for an async reader."""

    def __init__(self, names: list[str], callback: EventCallback) -> None:
        super().__init__(names)
        self._callback = callback

    async def put(self, event: Message) -> None:
        # Overriding put skips the base class's filter: apply it, or every listener hears
        # every event (a clone's RESUME listener heard VSERPORT_CHANGE as its resume).
        if not self.accept(event):
            return
        data = event.get("data")
        self._callback(str(event["event"]), data if isinstance(data, dict) else {})


class QMPConnection:
    """One QMP session with a QEMU process over an already connected UNIX socket."""

    def __init__(self, name: str) -> None:
        self._client = QMPClient(name)

    def on_events(self, names: list[str], callback: EventCallback) -> None:
        """Call *callback* for each event named in *names* (register before :meth:`connect`)."""
        self._client.register_listener(_CallbackListener(names, callback))

    def connect(self, connection: socket.socket, timeout: float) -> None:
        """Start the session on *connection* (connected by the caller, with its own retries:
        ``qemu.qmp`` logs each failed attempt of its own as an error)."""
        _loop_thread.run(self._client.connect(connection), timeout)

    def execute(
        self, command: str, arguments: dict[str, object] | None, timeout: float | None
    ) -> Any:
        """Run a QMP command; raises ``qemu.qmp.ExecuteError`` if QEMU refuses it."""
        return _loop_thread.run(self._client.execute(command, arguments), timeout)

    def close(self) -> None:
        try:
            _loop_thread.run(self._client.disconnect(), 5)
        except Exception:
            pass
