"""QMP event callbacks hear only the events they were registered for."""

from __future__ import annotations

import asyncio

from pytest_qemu.vm.qmp import _CallbackListener


def test_a_callback_hears_only_its_own_events() -> None:
    heard: list[tuple[str, dict[str, object]]] = []
    listener = _CallbackListener(["SHUTDOWN"], lambda name, data: heard.append((name, data)))

    async def deliver() -> None:
        await listener.put({"event": "RESUME", "data": {}})  # type: ignore[arg-type]
        await listener.put({"event": "VSERPORT_CHANGE", "data": {"open": False}})  # type: ignore[arg-type]
        await listener.put({"event": "SHUTDOWN", "data": {"reason": "guest-shutdown"}})  # type: ignore[arg-type]

    asyncio.run(deliver())
    assert heard == [("SHUTDOWN", {"reason": "guest-shutdown"})]
