"""pytest-qemu: real QEMU virtual machines as pytest fixtures."""

from pytest_qemu.channels import CommandOutput
from pytest_qemu.devices import (
    ArbitraryArgs,
    Device,
    DeviceContext,
    Disk,
    Network,
    NetworkInterface,
    P9Directory,
    ReadOnlyDirectory,
    UserNetwork,
    VirtioRandom,
)
from pytest_qemu.errors import (
    AgentDied,
    BootTimeout,
    CommandFailed,
    CommandTimeout,
    ConfigurationError,
    GuestUnresponsive,
    QemuError,
    SetupError,
    TransferFailed,
    VMError,
    VMExited,
)
from pytest_qemu.vm import VM, CommandResult, Console, ConsoleTimeout, MachineSpec
from pytest_qemu.vm.machine import GuestSetupError, SnapshotWarning

__version__ = "0.1.0"

__all__ = [
    "VM",
    "AgentDied",
    "ArbitraryArgs",
    "BootTimeout",
    "CommandFailed",
    "CommandOutput",
    "CommandResult",
    "CommandTimeout",
    "ConfigurationError",
    "Console",
    "ConsoleTimeout",
    "Device",
    "DeviceContext",
    "Disk",
    "GuestSetupError",
    "GuestUnresponsive",
    "MachineSpec",
    "Network",
    "NetworkInterface",
    "P9Directory",
    "QemuError",
    "ReadOnlyDirectory",
    "SetupError",
    "SnapshotWarning",
    "TransferFailed",
    "UserNetwork",
    "VMError",
    "VMExited",
    "VirtioRandom",
]
