"""Virtual machines: QEMU command lines, processes, QMP, console and the command agent."""

from pytest_qemu.channels.base import CommandResult
from pytest_qemu.vm.argv import MachineSpec
from pytest_qemu.vm.console import Console, ConsoleTimeout
from pytest_qemu.vm.machine import VM

__all__ = ["VM", "CommandResult", "Console", "ConsoleTimeout", "MachineSpec"]
