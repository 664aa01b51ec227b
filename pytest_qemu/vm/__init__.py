"""Virtual machines: QEMU command lines, processes, QMP, console and the command agent."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_qemu._lazy import lazy_exports

# Imported on first use: the package's light modules (accel, argv) load without them.
if TYPE_CHECKING:
    from pytest_qemu.channels.base import CommandResult
    from pytest_qemu.errors import ConsoleTimeout
    from pytest_qemu.vm.argv import MachineSpec
    from pytest_qemu.vm.console import Console
    from pytest_qemu.vm.machine import VM

__all__ = ["VM", "CommandResult", "Console", "ConsoleTimeout", "MachineSpec"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "CommandResult": "pytest_qemu.channels.base",
        "MachineSpec": "pytest_qemu.vm.argv",
        "Console": "pytest_qemu.vm.console",
        "ConsoleTimeout": "pytest_qemu.errors",
        "VM": "pytest_qemu.vm.machine",
    },
)
