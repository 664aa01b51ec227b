"""One private asyncio event loop in a daemon thread, for the ``qemu.qmp`` clients.

QMP and the QEMU guest agent are spoken through ``qemu.qmp``'s asyncio
clients. They all run here, so they work from any thread and never touch an
event loop the test itself uses (pytest-asyncio's, say).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop started on first use in a daemon thread."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started if need be."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name=self._name, daemon=True
                ).start()
            return self._loop

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run *coroutine* on the loop and wait for it, at most *timeout* seconds."""
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coroutine, timeout), self.loop)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C in the caller: do not leave the request running on the loop.
            future.cancel()
            raise


#: The loop every QMP and guest agent client of this process runs on.
loop_thread = LoopThread("pytest-qemu-asyncio")
