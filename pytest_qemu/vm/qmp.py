"""A synchronous, thread-safe face on ``qemu.qmp``'s asyncio QMP client.

Every client runs on one private event loop in a background thread, so QMP
works from any thread and never touches an event loop the test itself uses
(for example pytest-asyncio's).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from qemu.qmp import QMPClient

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="pytest-qemu-qmp", daemon=True
                ).start()
            loop = self._loop
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coroutine, timeout), loop)
        return future.result()


_loop_thread = _LoopThread()


class QMPConnection:
    """One QMP session with a QEMU process over its UNIX socket."""

    def __init__(self, socket_path: str, name: str) -> None:
        self._client = QMPClient(name)
        self._path = socket_path

    def connect(self, timeout: float) -> None:
        _loop_thread.run(self._client.connect(self._path), timeout)

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
